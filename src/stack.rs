//! The layers of [`crate::layers`] stacked in the order the bundled server uses, over the
//! account pool: [`gateway_stack`] for one dialect, [`StackParts`] for what the stack is built
//! from. An app that wants another order, another upstream or only some of the layers stacks
//! them itself (see `examples/custom_stack.rs`).

#![deny(missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::accounts::AccountPool;
use crate::api::Body;
use crate::auth::TokenManager;
use crate::kiro::KiroClient;
use crate::layers::{
    ApiKeyLayer, BodyBudget, CaptureConfig, DebugCaptureLayer, DialectApi, DialectLayer,
    JsonBodyLayer, Metrics, MetricsLayer, ModelNameLayer, ModelRequest, RetryConfig, RetryLayer,
    TranslateConfig, TranslateLayer, UpstreamCaptureLayer,
};
use crate::models::ModelCatalog;

/// The shared pieces a stack is built from (all cheap to clone).
#[derive(Clone)]
pub struct StackParts {
    /// Where the [`MetricsLayer`] of every route records (`None`: no metrics layer).
    pub metrics: Option<Metrics>,
    /// The client keys (`PROXY_API_KEY`, `[[api_keys]]`).
    pub api_keys: ApiKeyLayer,
    /// Largest request body accepted (`MAX_BODY_BYTES`).
    pub body_limit: usize,
    /// The bytes all request bodies being processed may hold together
    /// (`MAX_INFLIGHT_BODY_BYTES`; `None`: no bound).
    pub body_budget: Option<BodyBudget>,
    /// The debug capture (`DEBUG_MODE`, `DEBUG_DIR`, `DEBUG_KEEP`).
    pub capture: CaptureConfig,
    /// The models, and how a client's model name resolves to one.
    pub catalog: Arc<ModelCatalog>,
    /// The translation's settings.
    pub translate: TranslateConfig,
    /// The retry policy.
    pub retry: RetryConfig,
    /// The Kiro accounts, at the bottom of every chat stack.
    pub accounts: AccountPool,
    /// The first account's token manager (model lists, `/health`).
    pub tokens: TokenManager,
    /// The first account's client (model lists, `/health`).
    pub client: KiroClient,
}

/// The service behind a chat route of dialect `D`.
pub type ChatService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The full stack for one dialect, outermost first:
///
/// 0. [`MetricsLayer`] (when [`StackParts::metrics`] is set): the request counted and timed
///    by route, dialect, model, status, account and client key name when its body ends; the
///    layers below fill in its [`RequestRecord`];
/// 1. [`DialectLayer`]: the request marked with its dialect; every error of the layers below
///    (they return them as `Err`) rendered in that dialect's shape, here and nowhere else;
/// 2. [`ApiKeyLayer`]: the client's key, checked in constant time before the body is read;
/// 3. [`JsonBodyLayer`]: the body read once (bounded: 413 past `MAX_BODY_BYTES`; 503 when the
///    bodies in flight hold `MAX_INFLIGHT_BODY_BYTES`) and parsed into the dialect's request
///    type (bad JSON: 400 in the dialect's shape);
/// 4. [`DebugCaptureLayer`]: per-request debug files (`DEBUG_MODE`), off by default;
/// 5. [`ModelNameLayer`]: the client's model name resolved to a Kiro model id;
/// 6. [`TranslateLayer`]: dialect request → Kiro request, Kiro events → dialect SSE or JSON;
/// 7. [`UpstreamCaptureLayer`]: the Kiro events and failure into the debug capture (when the
///    request has one);
/// 8. [`RetryLayer`]: 429/5xx/connect errors and first-token timeouts retried with backoff,
///    never once anything reached the client;
/// 9. [`AccountPool`]: the account for each attempt (stickiness, failover to another account
///    before the first event, cool-downs); each account has its own
/// 10. [`KiroAuthLayer`](crate::layers::KiroAuthLayer): the current access token on every
///     attempt, one forced refresh on a stale-token 403;
/// 11. [`KiroClient`]: the pooled hyper/rustls client that speaks to Kiro.
///
/// The generic tower-http layers (request ids, sensitive headers, tracing, panic catching) go
/// around the router, see [`crate::server::router`].
pub fn gateway_stack<D>(parts: &StackParts) -> ChatService
where
    D: DialectApi,
    D::Request: serde::de::DeserializeOwned + ModelRequest + Sync,
{
    gateway_stack_over::<D, _>(parts, parts.accounts.clone())
}

/// [`gateway_stack`] over another upstream service than the account pool (an in-process fake
/// for benches, a recording wrapper): layers 0 to 8 over `upstream`, which puts the
/// credentials on the request itself.
pub fn gateway_stack_over<D, S>(parts: &StackParts, upstream: S) -> ChatService
where
    D: DialectApi,
    D::Request: serde::de::DeserializeOwned + ModelRequest + Sync,
    S: tower::Service<
            crate::kiro::GenerateRequest,
            Response = crate::kiro::GenerateResponse,
            Error = crate::kiro::Error,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let metrics = parts
        .metrics
        .clone()
        .map(|m| MetricsLayer::new(m, D::ROUTE, D::DIALECT));
    let svc = ServiceBuilder::new()
        .option_layer(metrics)
        .layer(DialectLayer::new(D::DIALECT))
        .layer(parts.api_keys.clone())
        .layer(match &parts.body_budget {
            Some(b) => JsonBodyLayer::<D::Request>::new(parts.body_limit).with_budget(b.clone()),
            None => JsonBodyLayer::<D::Request>::new(parts.body_limit),
        })
        .layer(DebugCaptureLayer::new(parts.capture.clone()))
        .layer(ModelNameLayer::new(parts.catalog.clone()))
        .layer(TranslateLayer::<D>::new(parts.translate.clone()))
        .layer(UpstreamCaptureLayer::new())
        .layer(RetryLayer::new(parts.retry.clone()))
        .service(upstream);
    BoxCloneSyncService::new(svc)
}
