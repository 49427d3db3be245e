//! The route handlers besides the chat stacks: `/`, `/health`, `/health/accounts`, the model
//! list, `/v1/messages/count_tokens`, `GET /v1/responses/{id}`, the admin APIs, `/metrics`,
//! the dashboard page, and the 404 / 405 answers. The key checks sit in front of them as
//! layers (see [`super::access`]); no handler checks a key itself.

use std::convert::Infallible;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::json;

use super::Gateway;
use crate::api::anthropic::AnthropicMessages;
use crate::api::{Body, Dialect, DialectApi};
use crate::error::GatewayError;

/// `GET /`: that the gateway runs, and its version.
pub async fn root() -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "message": "Kiro Gateway is running",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /health` (no key): whether any account can serve (503 when none can), the first
/// account's token state and the model catalogue's source.
pub async fn health(State(gw): State<Gateway>) -> Response<Body> {
    let pool = &gw.parts.accounts;
    // an account without a usable token tries its refresh again when that is due, so that
    // the answer is what a request would meet now
    pool.recheck_credentials().await;
    let status = gw.parts.tokens.status();
    let available = pool
        .accounts()
        .iter()
        .filter(|a| a.state() == crate::accounts::AccountState::Ok)
        .count();
    let serving = pool.can_serve();
    let expires_in = status
        .expires_at
        .and_then(|e| e.duration_since(SystemTime::now()).ok())
        .map(|d| d.as_secs());
    let catalog = &gw.parts.catalog;
    let mut r = axum::Json(json!({
        "status": if serving { "healthy" } else { "unavailable" },
        "accounts": {"total": pool.accounts().len(), "ok": available},
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": gw.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        "open_streams": gw.parts.translate.open_streams.get(),
        "protocol": gw.parts.client.config().protocol.as_str(),
        "auth": {
            "type": status.auth_kind.as_str(),
            "source": gw.parts.tokens.source().kind_name(),
            "token_expires_at": status.expires_at.map(crate::auth::source::format_expiry),
            "token_expires_in_secs": expires_in,
            "refreshes": status.refreshes,
            "unsaved_rotation": status.unsaved_rotation,
        },
        "models": {
            "source": match catalog.source() {
                crate::models::CatalogSource::Upstream => "upstream",
                crate::models::CatalogSource::Fallback => "fallback",
            },
            "count": catalog.models().len(),
            "age_secs": catalog.age().map(|a| a.as_secs()),
        },
    }))
    .into_response();
    if !serving {
        // load balancers take the gateway out while no account can serve
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    r
}

/// `GET /health/accounts` (behind the client key or the admin key, checked by the
/// [`AdminKeyLayer`](super::AdminKeyLayer) in front): every account's state and figures.
pub async fn health_accounts(State(gw): State<Gateway>) -> Response<Body> {
    axum::Json(accounts_json(&gw)).into_response()
}

fn accounts_json(gw: &Gateway) -> serde_json::Value {
    let pool = &gw.parts.accounts;
    json!({
        "selection": match pool.config().strategy {
            crate::accounts::Strategy::Priority => "priority",
            crate::accounts::Strategy::RoundRobin => "round_robin",
            crate::accounts::Strategy::LeastInFlight => "least_in_flight",
        },
        "can_serve": pool.can_serve(),
        "accounts": pool.snapshot(),
    })
}

/// `GET /dashboard`: the operator page (static: it holds no data and no secret; it asks for
/// the admin key and reads the admin APIs with it).
pub async fn dashboard_page() -> Response<Body> {
    let mut r = Response::new(Body::from(crate::dashboard::PAGE));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(crate::dashboard::content_security_policy()) {
        h.insert(http::header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// `GET /admin/stats` (admin key): what the dashboard shows besides the accounts: version,
/// uptime, upstream, the last hour per minute, the last failed requests, the model catalogue.
pub async fn admin_stats(State(gw): State<Gateway>) -> Response<Body> {
    let catalog = &gw.parts.catalog;
    let models: Vec<_> = catalog
        .listed_ids()
        .iter()
        .map(|id| {
            let limits = catalog.limits(id);
            json!({
                "id": id,
                "context_length": limits.as_ref().and_then(|l| l.max_input_tokens),
                "max_output_tokens": limits.as_ref().and_then(|l| l.max_output_tokens),
            })
        })
        .collect();
    let primary = gw.parts.accounts.primary();
    let mut r = axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": crate::auth::source::format_expiry(gw.started),
        "uptime_secs": gw.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        "protocol": gw.parts.client.config().protocol.as_str(),
        "region": primary.tokens().map(|t| t.api_region().to_owned()),
        "open_streams": gw.parts.translate.open_streams.get(),
        "traffic": gw.traffic.series(&gw.metrics),
        "failures": gw.metrics.recent_failures(),
        "models": {
            "source": match catalog.source() {
                crate::models::CatalogSource::Upstream => "upstream",
                crate::models::CatalogSource::Fallback => "fallback",
            },
            "age_secs": catalog.age().map(|a| a.as_secs()),
            "models": models,
        },
    }))
    .into_response();
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// `POST /admin/check`: whether the bearer is the admin key, as `{"admin": bool}` with 200
/// either way (the dashboard's sign-in asks it, so a mistyped key is not a failed request in
/// the browser's console). It tells no more than a 401 from any admin route would.
pub async fn admin_check(State(gw): State<Gateway>, headers: http::HeaderMap) -> Response<Body> {
    let key = super::AdminKeyLayer::new(gw.admin_key);
    let (admin, configured) = (key.is_admin(&headers), key.is_configured());
    axum::Json(json!({"admin": admin, "configured": configured})).into_response()
}

/// `POST /admin/models/reload` (admin key): fetch the model catalogue now.
pub async fn reload_models(State(gw): State<Gateway>) -> Response<Body> {
    match gw.refresh_models().await {
        Ok(n) => axum::Json(json!({"models": n})).into_response(),
        Err(e) => Dialect::OpenAi.error_response(&e),
    }
}

/// `POST /admin/accounts/{name}/reset` (behind the admin key): clear a cool-down, a parked or
/// a suspended state.
pub async fn reset_account(State(gw): State<Gateway>, Path(name): Path<String>) -> Response<Body> {
    let pool = &gw.parts.accounts;
    if !pool.reset(&name) {
        return Dialect::OpenAi.error_response(
            &GatewayError::not_found(format!("no account named {name:?}"))
                .with_code("account_not_found"),
        );
    }
    let snap = pool.snapshot().into_iter().find(|a| a.name == name);
    axum::Json(json!({"reset": name, "account": snap})).into_response()
}

/// `GET /metrics`: the Prometheus text, for whoever the
/// [`MetricsAccessLayer`](super::MetricsAccessLayer) in front lets in.
pub async fn metrics_text(State(gw): State<Gateway>) -> Response<Body> {
    let accounts = gw.parts.accounts.snapshot();
    gw.metrics.set_accounts(
        accounts
            .iter()
            .map(crate::layers::metrics::AccountGauge::from),
    );
    let mut r = Response::new(Body::from(gw.metrics.render()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `context_length` / `max_output_tokens` from the catalogue, when it reports them.
fn add_limits(obj: &mut serde_json::Value, catalog: &crate::models::ModelCatalog, id: &str) {
    let Some(limits) = catalog.limits(id) else {
        return;
    };
    if let Some(n) = limits.max_input_tokens {
        obj["context_length"] = json!(n);
    }
    if let Some(n) = limits.max_output_tokens {
        obj["max_output_tokens"] = json!(n);
    }
}

fn model_object(gw: &Gateway, id: &str) -> serde_json::Value {
    let mut m = json!({"id": id, "object": "model", "created": crate::api::unix_now(), "owned_by": "anthropic",
           "description": "Claude model via Kiro API"});
    add_limits(&mut m, &gw.parts.catalog, id);
    m
}

fn anthropic_model_object(gw: &Gateway, id: &str) -> serde_json::Value {
    let created = crate::auth::source::format_expiry(gw.started);
    let mut m = json!({"type": "model", "id": id, "display_name": id, "created_at": created});
    add_limits(&mut m, &gw.parts.catalog, id);
    m
}

/// Anthropic clients (they send `anthropic-version`) get Anthropic's list shape, with the
/// paging fields the SDK needs; everyone else OpenAI's. Both carry `context_length` and
/// `max_output_tokens` when the catalogue reports them.
pub async fn list_models(State(gw): State<Gateway>, headers: http::HeaderMap) -> impl IntoResponse {
    let ids = gw.parts.catalog.listed_ids();
    if headers.contains_key("anthropic-version") {
        let data: Vec<_> = ids
            .iter()
            .map(|id| anthropic_model_object(&gw, id))
            .collect();
        return axum::Json(json!({"data": data, "has_more": false,
            "first_id": ids.first(), "last_id": ids.last()}));
    }
    let data: Vec<_> = ids.iter().map(|id| model_object(&gw, id)).collect();
    axum::Json(json!({"object": "list", "data": data}))
}

/// The prompt-token estimate of a dialect request, as the usage figures start from it: the
/// request converted by the dialect's own [`DialectApi::conversation`], built into the Kiro
/// request as the translation builds it (without the reasoning the translation may add),
/// and counted by [`estimate_request`](crate::api::usage::estimate_request).
pub fn estimate_input<D: DialectApi>(
    req: &D::Request,
    model_id: String,
    cfg: &crate::layers::TranslateConfig,
) -> Result<u64, GatewayError> {
    let conv = D::conversation(req)?;
    let opts = crate::api::conversation::BuildOptions {
        model_id,
        origin: cfg.origin.clone(),
        tool_description_max: cfg.tool_description_max,
        ..Default::default()
    };
    let kiro = crate::api::conversation::to_kiro(conv, &opts)?;
    Ok(crate::api::usage::estimate_request(&kiro))
}

/// `POST /v1/messages/count_tokens`: the same estimate as the usage figures, over the request
/// as it would go to Kiro (system, messages, tools).
pub async fn count_tokens(State(gw): State<Gateway>, req: Request<Body>) -> Response<Body> {
    let dialect = Dialect::Anthropic;
    let limit = gw.parts.body_limit;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let result = async {
        crate::layers::decode::check_content_type(&parts.headers)?;
        // the permit holds the body's bytes in MAX_INFLIGHT_BODY_BYTES until the count is done
        let (mut body, _, _permit) = crate::layers::decode::read_json_within::<
            crate::api::anthropic::MessagesRequest,
        >(body, limit, declared, gw.parts.body_budget.as_ref())
        .await?;
        let resolved = gw
            .parts
            .catalog
            .resolve(&body.model)
            .unwrap_or_else(|_| crate::models::ResolvedModel::unknown(&body.model));
        // a count request carries no max_tokens (Anthropic's count endpoint takes none); the
        // messages conversion requires one and reads it for nothing else
        body.max_tokens.get_or_insert(1);
        estimate_input::<AnthropicMessages>(&body, resolved.kiro_id, &gw.parts.translate)
    };
    match result.await {
        Ok(n) => axum::Json(json!({"input_tokens": n})).into_response(),
        Err(e) => dialect.error_response(&e),
    }
}

/// `GET /v1/models/{id}`: one model, in Anthropic's shape for Anthropic clients, else
/// OpenAI's; 404 `model_not_found` for a model the catalogue cannot resolve.
pub async fn get_model(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
) -> Response<Body> {
    let anthropic = headers.contains_key("anthropic-version");
    let dialect = if anthropic {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    match gw.parts.catalog.resolve(&id) {
        Ok(_) if anthropic => axum::Json(anthropic_model_object(&gw, &id)).into_response(),
        Ok(_) => axum::Json(model_object(&gw, &id)).into_response(),
        Err(_) => dialect.error_response(
            &GatewayError::not_found(format!("The model {id:?} does not exist"))
                .with_code("model_not_found"),
        ),
    }
}

/// In front of `/v1/responses`: a WebSocket handshake (Codex tries one first when told to)
/// goes to `refusal` (the client-key check, then 426, which makes Codex fall back to HTTP at
/// once); anything else on to the route.
pub async fn refuse_websocket(
    State(refusal): State<crate::stack::ChatService>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return match tower::ServiceExt::oneshot(refusal, req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    next.run(req).await
}

/// `GET /v1/responses/{id}`: a kept response.
pub async fn get_response(State(gw): State<Gateway>, Path(id): Path<String>) -> Response<Body> {
    match crate::api::responses::retrieve(&gw.parts.translate.responses, &id) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => Dialect::OpenAi.error_response(&e),
    }
}

/// Any route the router does not know: 404 `not_found` in the dialect the request looks like.
pub async fn not_found(req: Request<Body>) -> Response<Body> {
    let dialect = Dialect::guess(&req);
    dialect.error_response(
        &GatewayError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
            .with_code("not_found"),
    )
}

/// A known route with another method: 405 with `Allow: POST`.
pub async fn method_not_allowed(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let e = GatewayError::new(
        crate::error::ErrorKind::MethodNotAllowed,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    );
    let mut r = Dialect::guess(&req).error_response(&e);
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    Ok(r)
}
