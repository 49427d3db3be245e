//! The gateway's layers stacked by hand inside someone else's axum app, without the bundled
//! server: a "notes" service that offers its users Claude at two paths of its own,
//! `/internal/assist/openai` (OpenAI chat completions) and `/internal/assist/anthropic`
//! (Anthropic messages), next to its own routes.
//!
//! Each endpoint is, outermost first: the dialect (marks the request, renders every error of
//! the layers below in that API's shape), the client's API key, the JSON body, the model name,
//! the translation to Kiro, the Kiro access token, and the Kiro client itself. No retry, no
//! account pool, no metrics, no debug capture: an app takes only the layers it wants.
//!
//! `cargo run --example custom_stack`, then
//! `curl localhost:3001/internal/assist/openai -H 'authorization: Bearer notes-key' -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}'`.
//!
//! With `KIRO_CREDS_FILE` set it talks to Kiro with those credentials; without, it runs on the
//! bundled offline mock upstream. `tests/custom_stack.rs` runs this file's `app` on the mock.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post_service};
use axum::Router;
use http::{Request, Response};
use kiro_gateway::api::anthropic::AnthropicMessages;
use kiro_gateway::api::openai::OpenAiChat;
use kiro_gateway::api::DialectApi;
use kiro_gateway::auth::{CredentialSettings, TokenConfig, TokenManager};
use kiro_gateway::body::Body;
use kiro_gateway::kiro::{
    EndpointTemplates, HttpConfig, KiroClient, KiroClientConfig, KiroHeaders, UpstreamHttp,
};
use kiro_gateway::layers::{
    ApiKeyLayer, DialectLayer, JsonBodyLayer, KiroAuthLayer, ModelNameLayer, ModelRequest,
    TranslateConfig, TranslateLayer,
};
use kiro_gateway::models::{ModelCatalog, UnknownModelPolicy};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

/// The Kiro side the endpoints share: one account's tokens and client.
#[derive(Clone)]
pub struct Upstream {
    pub tokens: TokenManager,
    pub client: KiroClient,
    pub catalog: Arc<ModelCatalog>,
}

impl Upstream {
    /// Credentials as the gateway reads them (`settings`), Kiro's endpoints under `endpoints`.
    pub fn new(
        settings: &CredentialSettings,
        endpoints: &EndpointTemplates,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let http = UpstreamHttp::new(&HttpConfig::default())?;
        let headers = KiroHeaders::new("notes-service");
        let tokens = TokenManager::load(
            settings,
            endpoints,
            http.clone(),
            headers.clone(),
            TokenConfig::default(),
        )?;
        let mut client_cfg = KiroClientConfig::new(endpoints.api(tokens.api_region()));
        client_cfg.headers = headers;
        let catalog = ModelCatalog::new(Duration::from_secs(3600), UnknownModelPolicy::Nearest);
        Ok(Upstream {
            tokens,
            client: KiroClient::new(http, client_cfg),
            catalog: Arc::new(catalog),
        })
    }
}

/// One chat endpoint of dialect `D`, stacked by hand.
pub fn endpoint<D>(
    upstream: &Upstream,
    keys: &ApiKeyLayer,
) -> BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>
where
    D: DialectApi,
    D::Request: serde::de::DeserializeOwned + ModelRequest + Sync,
{
    let translate = TranslateConfig {
        // the profile ARN, when the credentials carry one
        tokens: Some(upstream.tokens.clone()),
        origin: upstream.client.body_requirements().origin.into(),
        ..Default::default()
    };
    let svc = ServiceBuilder::new()
        .layer(DialectLayer::new(D::DIALECT))
        .layer(keys.clone())
        .layer(JsonBodyLayer::<D::Request>::new(4 << 20))
        .layer(ModelNameLayer::new(upstream.catalog.clone()))
        .layer(TranslateLayer::<D>::new(translate))
        .layer(KiroAuthLayer::new(upstream.tokens.clone()))
        .service(upstream.client.clone());
    BoxCloneSyncService::new(svc)
}

/// The notes service: its own routes, and the two assistant endpoints.
pub fn app(upstream: &Upstream, client_key: &str) -> Router {
    let keys = ApiKeyLayer::new([client_key]);
    Router::new()
        .route("/", get(|| async { "notes service" }))
        .route("/notes", get(|| async { "[]" }))
        .route(
            "/internal/assist/openai",
            post_service(endpoint::<OpenAiChat>(upstream, &keys)),
        )
        .route(
            "/internal/assist/anthropic",
            post_service(endpoint::<AnthropicMessages>(upstream, &keys)),
        )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let mut _mock = None;
    let (settings, endpoints) = match std::env::var_os("KIRO_CREDS_FILE") {
        Some(file) => (
            CredentialSettings {
                creds_file: Some(file.into()),
                ..Default::default()
            },
            EndpointTemplates::default(),
        ),
        None => {
            let mock = kiro_gateway::mock::MockKiro::start(Default::default()).await?;
            let settings = CredentialSettings {
                refresh_token: Some(kiro_gateway::Secret::new(
                    mock.config().initial_refresh_token.clone(),
                )),
                ..Default::default()
            };
            let endpoints = EndpointTemplates::all(&mock.url());
            _mock = Some(mock);
            println!("no KIRO_CREDS_FILE: using the offline mock upstream");
            (settings, endpoints)
        }
    };
    let upstream = Upstream::new(&settings, &endpoints)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("notes service on http://127.0.0.1:3001 (assistant at /internal/assist/openai and /internal/assist/anthropic, key notes-key)");
    axum::serve(listener, app(&upstream, "notes-key")).await?;
    Ok(())
}
