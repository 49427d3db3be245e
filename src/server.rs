//! The bundled server: the public layers plus routing, nothing private.
//!
//! [`Gateway::from_config`] builds the shared pieces (HTTP client, token manager, model
//! catalogue), [`Gateway::router`] the axum router (`/`, `/health`, `/v1/models`,
//! `/v1/models/{id}`, `/v1/chat/completions`; anything else a 404 in OpenAI error JSON), and
//! [`serve`] runs it with graceful shutdown. `examples/mount_in_axum.rs` mounts the same router
//! inside another application.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post_service};
use axum::Router;
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::api::anthropic::AnthropicMessages;
use crate::api::openai::OpenAiChat;
use crate::api::{Body, Dialect};
use crate::auth::{ProfileArnPolicy, TokenConfig, TokenManager};
use crate::config::{MetricsAccess, ValidConfig};
use crate::error::GatewayError;
use crate::kiro::{
    self, ApiProtocol, BearerKind, HttpConfig, KiroClient, KiroClientConfig, KiroHeaders,
    UpstreamHttp,
};
use crate::layers::{ApiKeyLayer, CaptureConfig, Metrics, RetryConfig, TranslateConfig};
use crate::models::ModelCatalog;
use crate::stack::StackParts;

/// Everything a running gateway shares between requests.
#[derive(Clone)]
pub struct Gateway {
    pub parts: StackParts,
    pub started: SystemTime,
    /// `CORS_ALLOW_ORIGINS` (empty: CORS off).
    pub cors_origins: Vec<String>,
    /// What `/metrics` shows (the routes record into it through `parts.metrics`).
    pub metrics: Metrics,
    /// Who may read `/metrics` (`METRICS_API_KEY`, `metrics_public`, the bind address).
    pub metrics_access: MetricsAccess,
    /// SHA-256 of `ADMIN_API_KEY` (`None`: the admin routes answer 403).
    pub admin_key: Option<[u8; 32]>,
    /// Per-minute history of the metrics, for the dashboard's charts (sampled by
    /// [`Traffic::sample_every_minute`](crate::dashboard::Traffic::sample_every_minute)).
    pub traffic: crate::dashboard::Traffic,
}

/// One account's model list.
async fn list_models_of(
    tokens: &TokenManager,
    client: &KiroClient,
) -> Result<Vec<crate::kiro::types::ModelInfo>, GatewayError> {
    let token = tokens.access_token().await?;
    let list = client
        .list_models_as(
            &token.token,
            tokens.bearer_kind(),
            tokens.profile_arn_for_requests().as_deref(),
        )
        .await
        .map_err(|e| match e {
            // an API key has no refresh to fall back on: say it is the key
            kiro::Error::Status(s)
                if tokens.bearer_kind() == BearerKind::ApiKey
                    && s.status == StatusCode::FORBIDDEN
                    && !s.is_suspended() =>
            {
                kiro::Error::Auth(TokenManager::api_key_refused(403, s.message.clone()))
            }
            other => other,
        })?;
    Ok(list.models)
}

/// One account's token manager and client, from its settings.
fn build_account(
    cfg: &ValidConfig,
    spec: &crate::config::AccountSettings,
    http: UpstreamHttp,
    headers: KiroHeaders,
) -> Result<(TokenManager, KiroClient), GatewayError> {
    let endpoints = &spec.endpoints;
    // the protocol decides what the body must carry; the layers above just use the values
    let body = spec.protocol.body_requirements();
    let profile_arn_policy = if body.profile_arn_required {
        if cfg.profile_arn_policy == ProfileArnPolicy::Never {
            tracing::warn!(
                account = %spec.name,
                "PROFILE_ARN_POLICY=never is ignored: the runtime protocol needs the profile ARN on every call"
            );
        }
        ProfileArnPolicy::Always
    } else {
        cfg.profile_arn_policy
    };
    let tokens = TokenManager::load(
        &spec.credentials,
        endpoints,
        http.clone(),
        headers.clone(),
        TokenConfig {
            refresh_margin: cfg.token_refresh_margin,
            lock_timeout: cfg.credentials_lock_timeout,
            profile_arn_policy,
            ..Default::default()
        },
    )?;
    if body.profile_arn_required && tokens.profile_arn().is_none() {
        return Err(GatewayError::internal(format!(
            "KIRO_API_PROTOCOL={} needs a profile ARN and none was found in {}. It is in the `state` table of kiro-cli's SQLite database (key api.codewhisperer.profile, read through KIRO_CLI_DB_FILE), in the profileArn field of the Kiro IDE's credentials file (KIRO_CREDS_FILE), or can be given as PROFILE_ARN=arn:aws:codewhisperer:<region>:<account>:profile/<id>",
            spec.protocol.as_str(),
            tokens.source().describe()
        )));
    }
    let region = tokens.api_region().to_owned();
    let mut client_cfg = match spec.protocol {
        ApiProtocol::Q => KiroClientConfig::new(endpoints.api(&region)),
        ApiProtocol::Runtime => {
            KiroClientConfig::runtime(endpoints.api(&region), endpoints.management(&region))
        }
    };
    client_cfg.idle_timeout = cfg.streaming_read_timeout;
    client_cfg.headers = headers;
    Ok((tokens, KiroClient::new(http, client_cfg)))
}

impl Gateway {
    /// Build from a checked configuration (reads the credentials; no network yet).
    pub fn from_config(cfg: &ValidConfig) -> Result<Self, GatewayError> {
        if cfg.accounts.is_empty() {
            // the credential loader says what is missing, in the single-account form's words
            return Err(crate::auth::source::load(&cfg.credentials())
                .err()
                .map(GatewayError::from)
                .unwrap_or_else(|| GatewayError::internal(crate::auth::source::HOW_TO_PROVIDE)));
        }
        let headers = KiroHeaders::default();
        // one HTTP client (connection pool) per outbound proxy
        let mut clients: Vec<(Option<String>, UpstreamHttp)> = Vec::new();
        let mut accounts = Vec::with_capacity(cfg.accounts.len());
        for spec in &cfg.accounts {
            let http = match clients.iter().find(|(p, _)| *p == spec.proxy) {
                Some((_, h)) => h.clone(),
                None => {
                    let h = UpstreamHttp::new(&HttpConfig {
                        proxy: spec.proxy.clone(),
                        connect_timeout: cfg.connect_timeout,
                        ..Default::default()
                    })?;
                    clients.push((spec.proxy.clone(), h.clone()));
                    h
                }
            };
            let (tokens, client) =
                build_account(cfg, spec, http, headers.clone()).map_err(|e| {
                    if cfg.accounts.len() > 1 {
                        let m = format!("account {:?}: {}", spec.name, e.message());
                        e.with_message(m)
                    } else {
                        e
                    }
                })?;
            accounts.push(
                crate::accounts::Account::kiro(spec.name.as_str(), tokens, client)
                    .with_priority(spec.priority)
                    .with_weight(spec.weight),
            );
        }
        let pool = crate::accounts::AccountPool::new(accounts, cfg.pool.clone())
            .map_err(GatewayError::internal)?;
        let primary = pool.primary();
        let (tokens, client) = match (primary.tokens(), primary.client()) {
            (Some(t), Some(c)) => (t.clone(), c.clone()),
            _ => return Err(GatewayError::internal("the first account has no client")),
        };
        let metrics = Metrics::new();
        let parts = StackParts {
            metrics: Some(metrics.clone()),
            api_keys: ApiKeyLayer::with_clients(cfg.client_keys.iter().cloned()),
            body_limit: cfg.max_body_bytes,
            body_budget: Some(crate::layers::BodyBudget::new(cfg.max_inflight_body_bytes)),
            capture: CaptureConfig {
                mode: cfg.debug_mode,
                dir: cfg.debug_dir.clone(),
                keep: cfg.debug_keep,
            },
            catalog: Arc::new(
                ModelCatalog::new(cfg.model_cache_ttl, cfg.unknown_model_policy)
                    .with_aliases(cfg.model_aliases.iter().map(|(a, m)| (a, m.clone()))),
            ),
            translate: TranslateConfig {
                tokens: Some(tokens.clone()),
                origin: client.body_requirements().origin.into(),
                tool_description_max: cfg.tool_description_max_length,
                thinking: crate::api::thinking::ThinkingDefaults {
                    enabled: cfg.fake_reasoning,
                    budget: cfg.fake_reasoning_max_tokens,
                },
                thinking_mode: cfg.thinking_mode,
                reasoning_mode: cfg.reasoning_mode,
                close_streams: CancellationToken::new(),
                pooled: pool.is_pooled(),
                max_payload_bytes: cfg.kiro_max_payload_bytes,
                auto_trim_payload: cfg.auto_trim_payload,
                open_streams: Default::default(),
                responses: crate::api::responses::ResponseStoreHandle::new(Arc::new(
                    crate::api::responses::MemoryResponseStore::new(
                        cfg.responses_store_max,
                        cfg.responses_store_ttl,
                    ),
                )),
            },
            retry: RetryConfig {
                max_attempts: cfg.retry_max_attempts,
                base_delay: cfg.retry_base_delay,
                max_delay: cfg.retry_max_delay,
                budget: cfg.retry_budget,
                first_token_timeout: cfg.first_token_timeout,
                first_token_max_attempts: cfg.first_token_max_attempts,
                retry_after_cap: cfg.retry_after_cap,
            },
            tokens,
            client,
            accounts: pool,
        };
        Ok(Gateway {
            admin_key: cfg.admin_key,
            traffic: crate::dashboard::Traffic::new(),
            parts,
            started: SystemTime::now(),
            cors_origins: cfg.cors_allow_origins.clone(),
            metrics,
            metrics_access: cfg.metrics_access.clone(),
        })
    }

    /// Fetch the model list now, from the first account that answers (in configuration
    /// order); on failure the current (fallback) list stays and the first account's error is
    /// returned.
    pub async fn refresh_models(&self) -> Result<usize, GatewayError> {
        let mut first_err = None;
        for a in self.parts.accounts.accounts() {
            let (Some(tokens), Some(client)) = (a.tokens(), a.client()) else {
                continue;
            };
            match list_models_of(tokens, client).await {
                Ok(models) => {
                    let n = models.len();
                    self.parts.catalog.set_models(models);
                    return Ok(n);
                }
                Err(e) => {
                    tracing::debug!(account = a.name(), error = %e, "model list failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| GatewayError::internal("no account to list models with")))
    }

    /// Refresh the catalogue every TTL until `cancel` fires.
    pub async fn refresh_models_periodically(self, cancel: CancellationToken) {
        let ttl = self.parts.catalog.ttl();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(ttl) => {}
            }
            match self.refresh_models().await {
                Ok(n) => tracing::debug!(models = n, "model catalogue refreshed"),
                Err(e) => {
                    tracing::warn!(error = %e, "model catalogue refresh failed; keeping the current list")
                }
            }
        }
    }

    /// The router with every route and the generic tower-http layers.
    pub fn router(&self) -> Router {
        let chat = crate::stack::gateway_stack::<OpenAiChat>(&self.parts);
        let messages = crate::stack::gateway_stack::<AnthropicMessages>(&self.parts);
        let responses =
            crate::stack::gateway_stack::<crate::api::responses::OpenAiResponses>(&self.parts);
        // the chat routes check the key inside their stack (below the metrics layer, so
        // refused requests are counted too); the other /v1 routes through `route_layer`
        // (a refused key on a route no chat stack marks is worded by the dialect the request
        // looks like)
        let keyed = || {
            tower::ServiceBuilder::new()
                .layer(crate::layers::DialectLayer::guess())
                .layer(self.parts.api_keys.clone())
        };
        let keyed_405 = || keyed().service(tower::service_fn(method_not_allowed));
        // the other /v1 routes are counted too (after their key check)
        let counted =
            |m: axum::routing::MethodRouter<Gateway>, route: &'static str, d: Dialect| match &self
                .parts
                .metrics
            {
                Some(metrics) => {
                    m.layer(crate::layers::MetricsLayer::new(metrics.clone(), route, d))
                }
                None => m,
            };
        let v1 = Router::new()
            .route(
                "/v1/models",
                counted(get(list_models), "/v1/models", Dialect::OpenAi),
            )
            .route(
                "/v1/models/{*id}",
                counted(get(get_model), "/v1/models/{id}", Dialect::OpenAi),
            )
            .route(
                "/v1/responses/{id}",
                counted(get(get_response), "/v1/responses/{id}", Dialect::OpenAi),
            )
            .route(
                "/v1/messages/count_tokens",
                counted(
                    axum::routing::post(count_tokens).fallback(method_not_allowed),
                    "/v1/messages/count_tokens",
                    Dialect::Anthropic,
                ),
            )
            .route_layer(keyed())
            .route(
                "/v1/chat/completions",
                post_service(chat).fallback_service(keyed_405()),
            )
            .route(
                "/v1/messages",
                post_service(messages).fallback_service(keyed_405()),
            )
            .route(
                "/v1/responses",
                post_service(responses)
                    .fallback_service(keyed_405())
                    // WebSocket handshakes are GETs: refused with 426 before method routing
                    .layer(axum::middleware::from_fn_with_state(
                        self.parts.api_keys.clone(),
                        refuse_websocket,
                    )),
            );
        let router =
            Router::new()
                .route("/", get(root))
                .route("/health", get(health))
                .route("/metrics", get(metrics_text))
                .route("/health/accounts", get(health_accounts))
                .route(
                    "/admin/accounts/{name}/reset",
                    axum::routing::post(reset_account).fallback(method_not_allowed),
                )
                .route("/admin/stats", get(admin_stats))
                .route(
                    "/admin/check",
                    axum::routing::post(admin_check).fallback(method_not_allowed),
                )
                .route(
                    "/admin/models/reload",
                    axum::routing::post(reload_models).fallback(method_not_allowed),
                )
                .route("/dashboard", get(dashboard_page))
                .merge(v1)
                // unknown routes say 404 only to a client with the key: without it nothing but
                // `/` and `/health` answers anything but 401
                .fallback_service(keyed().service(tower::service_fn(
                    |req: Request<Body>| async move { Ok::<_, Infallible>(not_found(req).await) },
                )))
                .with_state(self.clone());
        // CORS is off unless origins are configured
        let router = match cors_layer(&self.cors_origins) {
            Some(cors) => router.layer(cors),
            None => router,
        };
        router.layer(
            ServiceBuilder::new()
                .layer(tower::util::MapResponseLayer::new(copy_request_id))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    http::header::AUTHORIZATION,
                    http::HeaderName::from_static("x-api-key"),
                    http::HeaderName::from_static("api-key"),
                ]))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http())
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    panic_response,
                )),
        )
    }
}

fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any),
    )
}

/// Anthropic clients read `request-id`; OpenAI ones `x-request-id`: send both.
fn copy_request_id<B>(mut r: Response<B>) -> Response<B> {
    if let Some(id) = r.headers().get("x-request-id").cloned() {
        r.headers_mut().insert("request-id", id);
    }
    r
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    Dialect::OpenAi.error_response(&GatewayError::internal("internal error in the gateway"))
}

/// Collapse repeated slashes (`/v1//models` from clients that concatenate base URLs) before
/// routing.
pub fn normalize_path<B>(mut req: Request<B>) -> Request<B> {
    let path = req.uri().path();
    if !path.contains("//") {
        return req;
    }
    let mut clean = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && clean.ends_with('/')) {
            clean.push(c);
        }
    }
    if let Some(q) = req.uri().query() {
        clean.push('?');
        clean.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = clean.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

async fn root() -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "message": "Kiro Gateway is running",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn health(State(gw): State<Gateway>) -> Response<Body> {
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

/// `GET /health/accounts` (behind the client key or the admin key): every account's state and
/// figures.
async fn health_accounts(State(gw): State<Gateway>, req: Request<Body>) -> Response<Body> {
    let admin = gw
        .admin_key
        .as_ref()
        .is_some_and(|d| bearer_matches(req.headers(), d));
    if !admin && !gw.parts.api_keys.accepts(&req) {
        return Dialect::OpenAi.error_response(&GatewayError::unauthorized(
            "Invalid or missing API key. Use Authorization: Bearer <key>.",
        ));
    }
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
async fn dashboard_page() -> Response<Body> {
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
async fn admin_stats(State(gw): State<Gateway>, headers: http::HeaderMap) -> Response<Body> {
    if let Some(r) = admin_refusal(&gw, &headers) {
        return r;
    }
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
async fn admin_check(State(gw): State<Gateway>, headers: http::HeaderMap) -> Response<Body> {
    let configured = gw.admin_key.is_some();
    let admin = gw
        .admin_key
        .as_ref()
        .is_some_and(|d| bearer_matches(&headers, d));
    axum::Json(json!({"admin": admin, "configured": configured})).into_response()
}

/// `POST /admin/models/reload` (admin key): fetch the model catalogue now.
async fn reload_models(State(gw): State<Gateway>, headers: http::HeaderMap) -> Response<Body> {
    if let Some(r) = admin_refusal(&gw, &headers) {
        return r;
    }
    match gw.refresh_models().await {
        Ok(n) => axum::Json(json!({"models": n})).into_response(),
        Err(e) => Dialect::OpenAi.error_response(&e),
    }
}

/// A bearer checked in constant time against a SHA-256 digest.
fn bearer_matches(headers: &http::HeaderMap, digest: &[u8; 32]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let presented = crate::layers::auth::bearer(headers)
        .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()))
        .map(<[u8]>::trim_ascii)
        .unwrap_or_default();
    let got: [u8; 32] = Sha256::digest(presented).into();
    bool::from(got.ct_eq(digest))
}

/// The admin key check of the `/admin` routes: `None` when the key is right, else the answer:
/// 403 when no `ADMIN_API_KEY` is set, 401 for a wrong or missing one.
pub fn admin_refusal(gw: &Gateway, headers: &http::HeaderMap) -> Option<Response<Body>> {
    match &gw.admin_key {
        None => {
            let e = GatewayError::new(
                crate::error::ErrorKind::Permission,
                "the admin routes are off: set ADMIN_API_KEY, then send it as Authorization: Bearer <key>",
            )
            .with_code("admin_disabled");
            Some(Dialect::OpenAi.error_response(&e))
        }
        Some(d) if bearer_matches(headers, d) => None,
        Some(_) => Some(Dialect::OpenAi.error_response(&GatewayError::unauthorized(
            "the admin routes need Authorization: Bearer <ADMIN_API_KEY>",
        ))),
    }
}

/// `POST /admin/accounts/{name}/reset` (behind the admin key): clear a cool-down, a parked or
/// a suspended state.
async fn reset_account(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
) -> Response<Body> {
    if let Some(r) = admin_refusal(&gw, &headers) {
        return r;
    }
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

/// `GET /metrics`: the Prometheus text, for whoever [`MetricsAccess`] lets in.
async fn metrics_text(State(gw): State<Gateway>, headers: http::HeaderMap) -> Response<Body> {
    match &gw.metrics_access {
        MetricsAccess::Open => {}
        MetricsAccess::Key(digest) => {
            if !bearer_matches(&headers, digest) {
                return Dialect::OpenAi.error_response(&GatewayError::unauthorized(
                    "/metrics needs Authorization: Bearer <METRICS_API_KEY>",
                ));
            }
        }
        MetricsAccess::Off => {
            let e = GatewayError::new(
                crate::error::ErrorKind::Permission,
                "/metrics is off on a non-loopback address: set METRICS_API_KEY (then send it as a bearer) or metrics_public = true",
            )
            .with_code("metrics_disabled");
            return Dialect::OpenAi.error_response(&e);
        }
    }
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
async fn list_models(State(gw): State<Gateway>, headers: http::HeaderMap) -> impl IntoResponse {
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

/// `POST /v1/messages/count_tokens`: the same estimate as the usage figures, over the request
/// as it would go to Kiro (system, messages, tools).
async fn count_tokens(State(gw): State<Gateway>, req: Request<Body>) -> Response<Body> {
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
        let (body, _, _permit) = crate::layers::decode::read_json_within::<
            crate::api::anthropic::MessagesRequest,
        >(body, limit, declared, gw.parts.body_budget.as_ref())
        .await?;
        let resolved = gw
            .parts
            .catalog
            .resolve(&body.model)
            .unwrap_or_else(|_| crate::models::ResolvedModel::unknown(&body.model));
        let conv = crate::api::anthropic::to_conversation(&body, false)?;
        let opts = crate::api::conversation::BuildOptions {
            model_id: resolved.kiro_id,
            origin: gw.parts.translate.origin.clone(),
            profile_arn: None,
            conversation_id: String::new(),
            tool_description_max: gw.parts.translate.tool_description_max,
            ..Default::default()
        };
        let kiro = crate::api::conversation::to_kiro(conv, &opts)?;
        Ok::<_, GatewayError>(crate::api::usage::estimate_request(&kiro))
    };
    match result.await {
        Ok(n) => axum::Json(json!({"input_tokens": n})).into_response(),
        Err(e) => dialect.error_response(&e),
    }
}

async fn get_model(
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

/// Codex tries a WebSocket first when told to; 426 makes it fall back to HTTP at once.
/// (Without a valid key the answer is the 401 every other route gives.)
async fn refuse_websocket(
    State(keys): State<crate::layers::ApiKeyLayer>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade && !keys.accepts(&req) {
        return Dialect::OpenAi.error_response(&GatewayError::unauthorized(
            "Invalid or missing API key. Use Authorization: Bearer <key>.",
        ));
    }
    if upgrade {
        let e = GatewayError::new(
            crate::error::ErrorKind::UpgradeRequired,
            "this gateway answers the Responses API over HTTP (server-sent events), not WebSocket",
        )
        .with_code("websocket_not_supported");
        return Dialect::OpenAi.error_response(&e);
    }
    next.run(req).await
}

/// `GET /v1/responses/{id}`: a kept response.
async fn get_response(State(gw): State<Gateway>, Path(id): Path<String>) -> Response<Body> {
    match crate::api::responses::retrieve(&gw.parts.translate.responses, &id) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => Dialect::OpenAi.error_response(&e),
    }
}

async fn not_found(req: Request<Body>) -> Response<Body> {
    let dialect = Dialect::guess(&req);
    dialect.error_response(
        &GatewayError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
            .with_code("not_found"),
    )
}

async fn method_not_allowed(req: Request<Body>) -> Result<Response<Body>, Infallible> {
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

/// Connection limits and shutdown behaviour of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long running requests may go on after shutdown starts; then open streams are closed
    /// with an error event (`SHUTDOWN_GRACE_SECS`).
    pub grace: Duration,
    /// A connection must complete a request head within this time (`HEADER_READ_TIMEOUT`):
    /// counted from its accept for the first request, whatever it sends meanwhile (nothing,
    /// part of the HTTP/2 preface, half a request line), and from the end of the previous
    /// answer on a kept-alive HTTP/1 connection. Then it is closed.
    pub header_read_timeout: Duration,
    /// Bound on the request head (HTTP/1 read buffer, HTTP/2 header list). For HTTP/1 it also
    /// caps what hyper queues for a slow reader before it stops pulling the response body, so
    /// it is kept small (16 KiB, a few times what any known client sends as headers).
    pub max_header_bytes: usize,
    /// Open client connections at most (`MAX_CONNECTIONS`); past it a new connection is closed
    /// as soon as it is accepted. 0: [`default_max_connections`].
    pub max_connections: usize,
    /// Where the connection figures are recorded (open, refused, closed without a request).
    pub metrics: Option<crate::layers::Metrics>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 0,
            metrics: None,
        }
    }
}

/// The connection cap when `MAX_CONNECTIONS` is 0: half the process's soft limit on open files
/// (the other half is left for upstream connections, credential files and the listener), at
/// least 64; 4096 where the limit cannot be read (it is read from `/proc/self/limits`).
pub fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| open_files_limit(&t))
        .map_or(4096, |n| (n / 2).max(64))
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text (`None`: unlimited or absent).
fn open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Set once hyper has parsed a request head on the connection (it calls the service then).
#[derive(Default)]
struct FirstHead {
    seen: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// The connection's service, which tells [`FirstHead`] when a request head is complete.
#[derive(Clone)]
struct MarkHead<S> {
    inner: S,
    first: Arc<FirstHead>,
}

impl<S, R> hyper::service::Service<R> for MarkHead<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> Self::Future {
        if !self
            .first
            .seen
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.first.notify.notify_one();
        }
        self.inner.call(req)
    }
}

/// Serve `router` on `listener` until `shutdown` fires. Then the listener closes, running
/// requests get `opts.grace` to finish, and after that `close_streams` is cancelled so every
/// open stream ends with an error event (never a clean-looking end); the call returns once
/// all connections are done.
///
/// Each connection is one task holding one of `opts.max_connections` slots; when none is free
/// a new connection is closed at once. A connection that has not completed a request head
/// within `opts.header_read_timeout` of its accept is closed, whatever it sent: hyper's own
/// header timeout only starts once the bytes that tell HTTP/1 from HTTP/2 are in, and HTTP/2
/// has none. Later requests on a kept-alive HTTP/1 connection are under hyper's header timeout
/// (which runs from the end of the previous answer); an HTTP/2 connection whose peer stops
/// answering pings is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
    close_streams: CancellationToken,
    opts: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower_layer::Layer;
    let app =
        tower::util::MapRequestLayer::new(normalize_path::<hyper::body::Incoming>).layer(router);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let max = match opts.max_connections {
        0 => default_max_connections(),
        n => n,
    };
    // whole permits are waited for at shutdown, in one `acquire_many` (a u32)
    let max = max.min(u32::MAX as usize) as u32;
    let slots = Arc::new(tokio::sync::Semaphore::new(max as usize));
    let metrics = opts.metrics.clone();
    let set_open = {
        let (slots, metrics) = (slots.clone(), metrics.clone());
        move || {
            if let Some(m) = &metrics {
                m.set_open_connections(max as usize - slots.available_permits());
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // out of file descriptors and the like: back off instead of spinning
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // over MAX_CONNECTIONS: closed at once, so the descriptors left serve the
                    // connections already open (and the upstream ones)
                    drop(stream);
                    if let Some(m) = &metrics {
                        m.connection_refused();
                    }
                    tracing::debug!(max, "connection refused: MAX_CONNECTIONS reached");
                    continue;
                };
                set_open();
                let _ = stream.set_nodelay(true);
                let (builder, app, shutdown) = (builder.clone(), app.clone(), shutdown.clone());
                let (metrics, set_open) = (metrics.clone(), set_open.clone());
                let head_timeout = opts.header_read_timeout;
                // each connection task holds a slot, which shutdown waits for
                tokio::spawn(async move {
                    let first = Arc::new(FirstHead::default());
                    let svc = MarkHead {
                        inner: hyper_util::service::TowerToHyperService::new(app),
                        first: first.clone(),
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    let head_deadline = tokio::time::sleep(head_timeout);
                    tokio::pin!(head_deadline);
                    let mut waiting_for_head = true;
                    let mut draining = false;
                    loop {
                        tokio::select! {
                            done = conn.as_mut() => {
                                if let Err(e) = done {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                                break;
                            }
                            _ = first.notify.notified(), if waiting_for_head => {
                                waiting_for_head = false;
                            }
                            _ = &mut head_deadline, if waiting_for_head => {
                                if first.seen.load(std::sync::atomic::Ordering::Acquire) {
                                    waiting_for_head = false;
                                    continue;
                                }
                                // no request yet, so nothing to finish: dropping the
                                // connection closes the socket
                                if let Some(m) = &metrics {
                                    m.connection_head_timeout();
                                }
                                tracing::debug!("connection closed: no complete request head within HEADER_READ_TIMEOUT");
                                break;
                            }
                            _ = shutdown.cancelled(), if !draining => {
                                draining = true;
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                    drop(slot);
                    set_open();
                });
            }
        }
    }
    drop(listener);
    // every connection task gives its slot back when it ends
    let all_done = slots.acquire_many(max);
    tokio::pin!(all_done);
    tokio::select! {
        _ = &mut all_done => {}
        _ = tokio::time::sleep(opts.grace) => {
            tracing::warn!("grace period over: closing the remaining streams");
            close_streams.cancel();
            if tokio::time::timeout(Duration::from_secs(5), &mut all_done).await.is_err() {
                tracing::warn!("some connections did not close in time");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_files_limit() {
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(
            open_files_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert!(default_max_connections() >= 64);
    }

    #[test]
    fn collapses_duplicate_slashes() {
        let r = normalize_path(Request::get("/v1//models?x=1").body(()).unwrap());
        assert_eq!(r.uri(), "/v1/models?x=1");
        let r = normalize_path(Request::get("/v1/models").body(()).unwrap());
        assert_eq!(r.uri(), "/v1/models");
    }
}
