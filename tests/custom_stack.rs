//! `examples/custom_stack.rs` run on the mock upstream: the layers stacked by hand at a foreign
//! app's own paths answer in both dialects, stream and not, and refuse in each dialect's shape,
//! while the app's own routes go on answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "../examples/custom_stack.rs"]
#[allow(dead_code)] // the example's main is not called here
mod custom_stack;

use http::Request;
use http_body_util::BodyExt;
use kiro_gateway::auth::CredentialSettings;
use kiro_gateway::body::Body;
use kiro_gateway::kiro::EndpointTemplates;
use kiro_gateway::mock::{MockConfig, MockKiro, Reply, Script};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "notes-key";

async fn app_on_mock() -> (axum::Router, MockKiro) {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let settings = CredentialSettings {
        refresh_token: Some(kiro_gateway::Secret::new(
            mock.config().initial_refresh_token.clone(),
        )),
        ..Default::default()
    };
    let upstream =
        custom_stack::Upstream::new(&settings, &EndpointTemplates::all(&mock.url())).unwrap();
    (custom_stack::app(&upstream, KEY), mock)
}

async fn post(app: &axum::Router, path: &str, key: &str, body: Value) -> (u16, String, String) {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

fn openai(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

fn anthropic(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn the_hand_stacked_endpoints_answer_in_both_dialects_stream_and_not() {
    let (app, mock) = app_on_mock().await;

    mock.push_reply(Reply::Stream(Script::text("notes in order", 3)));
    let (s, ctype, body) = post(&app, "/internal/assist/openai", KEY, openai(false)).await;
    assert_eq!((s, ctype.as_str()), (200, "application/json"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "notes in order");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    mock.push_reply(Reply::Stream(Script::text("streamed notes", 3)));
    let (s, ctype, body) = post(&app, "/internal/assist/openai", KEY, openai(true)).await;
    assert_eq!(s, 200);
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    assert!(body.contains("chat.completion.chunk"), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    mock.push_reply(Reply::Stream(Script::text("anthropic notes", 3)));
    let (s, _, body) = post(&app, "/internal/assist/anthropic", KEY, anthropic(false)).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "anthropic notes");
    assert_eq!(v["stop_reason"], "end_turn");

    mock.push_reply(Reply::Stream(Script::text("anthropic stream", 3)));
    let (s, ctype, body) = post(&app, "/internal/assist/anthropic", KEY, anthropic(true)).await;
    assert_eq!(s, 200);
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    assert!(body.starts_with("event: message_start"), "{body}");
    assert!(body.contains("event: message_stop"), "{body}");

    // the app's own routes are untouched
    let resp = app
        .clone()
        .oneshot(Request::get("/notes").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "[]");
}

#[tokio::test]
async fn refusals_come_in_the_dialect_of_the_endpoint() {
    let (app, mock) = app_on_mock().await;

    // a wrong key: 401 in each shape, and nothing sent upstream
    let (s, _, body) = post(&app, "/internal/assist/openai", "wrong", openai(false)).await;
    assert_eq!(s, 401);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (s, _, body) = post(
        &app,
        "/internal/assist/anthropic",
        "wrong",
        anthropic(false),
    )
    .await;
    assert_eq!(s, 401);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(
        v["error"]["message"],
        "Invalid or missing API key. Use the x-api-key header or Authorization: Bearer."
    );

    // a body that is not the dialect's request: 400 in its shape
    let (s, _, body) = post(&app, "/internal/assist/anthropic", KEY, json!({"model": 3})).await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // a model of no known family: the model layer's 400, with close matches
    let mut bad = openai(false);
    bad["model"] = json!("gpt-4o");
    let (s, _, body) = post(&app, "/internal/assist/openai", KEY, bad).await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");

    assert_eq!(mock.generate_calls(), 0, "no refusal reached Kiro");
}
