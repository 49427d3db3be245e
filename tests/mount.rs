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
