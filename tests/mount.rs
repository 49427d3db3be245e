//! The gateway's router mounted inside someone else's axum app, as examples/mount_in_axum.rs
//! does: both the app's own routes and the gateway's answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use axum::routing::get;
use axum::Router;
use http::Request;
use http_body_util::BodyExt;
use kiro_gateway::api::Body;
use kiro_gateway::config::Config;
use kiro_gateway::mock::{MockConfig, MockKiro, Reply, Script};
use kiro_gateway::server::Gateway;
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[tokio::test]
async fn mounts_under_a_prefix_next_to_the_apps_routes() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let mut cfg = Config {
        proxy_api_key: "k".into(),
        ..Default::default()
    };
    cfg.use_mock(&mock);
    let gateway = Gateway::from_config(&cfg.validate().unwrap()).unwrap();
    let app = Router::new()
        .route("/", get(|| async { "my application" }))
        .nest("/llm", gateway.router());

    let own = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        own.into_body().collect().await.unwrap().to_bytes(),
        "my application"
    );

    mock.push_reply(Reply::Stream(Script::text("mounted and working", 5)));
    let req = Request::post("/llm/v1/chat/completions")
        .header("authorization", "Bearer k")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "mounted and working");

    // the gateway's own errors keep their shape under the prefix
    let req = Request::get("/llm/v1/models").body(Body::empty()).unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
}

/// `models.source` of the mounted gateway's `/health`.
async fn catalogue_source(app: &Router) -> String {
    let req = Request::get("/llm/health").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    v["models"]["source"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn start_background_refreshes_the_catalogue_of_a_mounted_gateway_and_stops_on_shutdown() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let mut cfg = Config::default();
    cfg.use_mock(&mock);
    let gateway = Gateway::from_config(&cfg.validate().unwrap()).unwrap();
    let app = Router::new().nest("/llm", gateway.router());
    // mounting alone loads nothing: the built-in list
    assert_eq!(catalogue_source(&app).await, "fallback");

    let shutdown = CancellationToken::new();
    let background = gateway.start_background(&shutdown);
    assert_eq!(
        background.names(),
        [
            "model-catalogue",
            "account-tokens",
            "metrics-upkeep",
            "traffic-samples"
        ]
    );
    // the catalogue task fetches the upstream list at once (the catalogue is not fresh)
    let loaded = tokio::time::timeout(Duration::from_secs(10), async {
        while catalogue_source(&app).await != "upstream" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        loaded.is_ok(),
        "the model list was not loaded in the background"
    );
    let ids: Vec<String> = gateway
        .parts
        .catalog
        .models()
        .into_iter()
        .map(|m| m.model_id)
        .collect();
    assert_eq!(ids, mock.config().models);

    // one token stops every task
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), background.join()).await;
    assert!(
        stopped.is_ok(),
        "a background task outlived the shutdown token"
    );
}
