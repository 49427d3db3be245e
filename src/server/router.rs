//! The router: every route of the bundled server, the key layers in front of the non-chat
//! routes, and the generic tower-http layers around it all.

use std::convert::Infallible;

use axum::routing::{get, post, post_service};
use axum::Router;
use http::{HeaderValue, Request, Response};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use super::access::{AdminKeyLayer, MetricsAccessLayer};
use super::routes::*;
use super::Gateway;
use crate::api::anthropic::AnthropicMessages;
use crate::api::openai::OpenAiChat;
use crate::api::{Body, Dialect};
use crate::error::GatewayError;
use crate::layers::DialectLayer;

impl Gateway {
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
                .layer(DialectLayer::guess())
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
                    post(count_tokens).fallback(method_not_allowed),
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
                    // WebSocket handshakes (GETs, whatever the method) are answered 426
                    // before method routing, once the key is checked
                    .layer(axum::middleware::from_fn_with_state(
                        websocket_refusal(&self.parts.api_keys),
                        refuse_websocket,
                    )),
            );
        // the operator routes: their key layers under the OpenAI error shape; a wrong method
        // is a 405 before any key check, as it always was (`MethodRouter::route_layer` leaves
        // the fallback out)
        let operator = |access| {
            ServiceBuilder::new()
                .layer(DialectLayer::new(Dialect::OpenAi))
                .layer(access)
        };
        let admin = || operator(AdminKeyLayer::new(self.admin_key));
        let router = Router::new()
            .route("/", get(root))
            .route("/health", get(health))
            .route(
                "/metrics",
                get(metrics_text).route_layer(
                    ServiceBuilder::new()
                        .layer(DialectLayer::new(Dialect::OpenAi))
                        .layer(MetricsAccessLayer::new(self.metrics_access.clone())),
                ),
            )
            .route(
                "/health/accounts",
                get(health_accounts).route_layer(operator(
                    AdminKeyLayer::new(self.admin_key).or_client_keys(self.parts.api_keys.clone()),
                )),
            )
            .route(
                "/admin/accounts/{name}/reset",
                post(reset_account)
                    .route_layer(admin())
                    .fallback(method_not_allowed),
            )
            .route("/admin/stats", get(admin_stats).route_layer(admin()))
            // answers whether the key is the admin key: no check in front
            .route(
                "/admin/check",
                post(admin_check).fallback(method_not_allowed),
            )
            .route(
                "/admin/models/reload",
                post(reload_models)
                    .route_layer(admin())
                    .fallback(method_not_allowed),
            )
            .route("/dashboard", get(dashboard_page))
            .merge(v1)
            // unknown routes say 404 only to a client with the key: without it nothing but
            // `/` and `/health` answers anything but 401
            .fallback_service(
                keyed().service(tower::service_fn(|req: Request<Body>| async move {
                    Ok::<_, Infallible>(not_found(req).await)
                })),
            )
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

/// [`Gateway::router`], as a function.
pub fn router(gateway: &Gateway) -> Router {
    gateway.router()
}

/// What a WebSocket handshake on `/v1/responses` gets: the client-key check (401 without a
/// valid key), then 426 `websocket_not_supported` (Codex then falls back to HTTP at once).
fn websocket_refusal(keys: &crate::layers::ApiKeyLayer) -> crate::stack::ChatService {
    let refuse = tower::service_fn(|_req: Request<Body>| async {
        Err::<Response<Body>, _>(
            GatewayError::new(
                crate::error::ErrorKind::UpgradeRequired,
                "this gateway answers the Responses API over HTTP (server-sent events), not WebSocket",
            )
            .with_code("websocket_not_supported"),
        )
    });
    tower::util::BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(DialectLayer::new(Dialect::OpenAi))
            .layer(keys.clone())
            .service(refuse),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_duplicate_slashes() {
        let r = normalize_path(Request::get("/v1//models?x=1").body(()).unwrap());
        assert_eq!(r.uri(), "/v1/models?x=1");
        let r = normalize_path(Request::get("/v1/models").body(()).unwrap());
        assert_eq!(r.uri(), "/v1/models");
    }
}
