//! The dashboard's page and admin APIs over HTTP (the browser test in tests/clients drives the
//! page itself): who may read what, and that the figures follow the requests made.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{start_with, Running};
use http::StatusCode;
use kiro_gateway::mock::MockConfig;
use kiro_gateway::Secret;
use serde_json::{json, Value};

const ADMIN: &str = "the-admin-key-of-this-test";

async fn admin(r: &Running, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = r.req(method, path, "");
    match key {
        Some(k) => {
            req.headers_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        None => {
            req.headers_mut().remove("authorization");
        }
    }
    let (s, _, b) = r.send(req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn with_admin() -> Running {
    start_with(MockConfig::default(), |cfg| {
        cfg.admin_api_key = Some(Secret::new(ADMIN));
    })
    .await
}

#[tokio::test]
async fn the_page_is_static_and_locked_down() {
    let r = with_admin().await;
    let mut req = r.req("GET", "/dashboard", "");
    req.headers_mut().remove("authorization");
    let (s, h, body) = r.send(req).await;
    assert_eq!(s, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert_eq!(h["x-frame-options"], "DENY");
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains("sessionStorage") && !page.contains("localStorage"));
    assert!(!page.contains(ADMIN) && !page.contains("test-key"));
    // nothing loaded from elsewhere (the SVG namespace URI is a name, not a fetch)
    for fetch in ["src=\"", "href=\"http", "@import", "url("] {
        assert!(!page.contains(fetch), "{fetch}");
    }
}

#[tokio::test]
async fn the_admin_apis_need_the_admin_key() {
    let r = with_admin().await;
    for (method, path) in [
        ("GET", "/admin/stats"),
        ("POST", "/admin/models/reload"),
        ("POST", "/admin/accounts/default/reset"),
    ] {
        assert_eq!(admin(&r, method, path, None).await.0, 401, "{path}");
        assert_eq!(
            admin(&r, method, path, Some("test-key")).await.0,
            401,
            "{path}"
        );
        assert_eq!(admin(&r, method, path, Some(ADMIN)).await.0, 200, "{path}");
    }
    // the sign-in check answers 200 either way and tells only yes or no
    let (s, v) = admin(&r, "POST", "/admin/check", Some("wrong")).await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"admin": false, "configured": true}))
    );
    let (_, v) = admin(&r, "POST", "/admin/check", Some(ADMIN)).await;
    assert_eq!(v["admin"], true);
    // the accounts list takes the admin key as well as a client key
    assert_eq!(
        admin(&r, "GET", "/health/accounts", Some(ADMIN)).await.0,
        200
    );

    // without ADMIN_API_KEY the admin routes are off
    let r = start_with(MockConfig::default(), |_| {}).await;
    let (s, v) = admin(&r, "GET", "/admin/stats", Some("anything")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "admin_disabled");
    let (_, v) = admin(&r, "POST", "/admin/check", Some("anything")).await;
    assert_eq!(v["configured"], false);
}

#[tokio::test]
async fn stats_follow_the_requests_made() {
    let r = with_admin().await;
    r.gateway.traffic.sample(&r.gateway.metrics);
    for i in 0..5 {
        let (s, _, _) = r
            .chat(json!({"model": "claude-sonnet-4-5",
                         "messages": [{"role": "user", "content": format!("hello {i}")}]}))
            .await;
        assert_eq!(s, 200);
    }
    let (s, _, _) = r
        .chat(json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(s, 400);
    let (s, v) = admin(&r, "GET", "/admin/stats", Some(ADMIN)).await;
    assert_eq!(s, 200);
    let t = &v["traffic"];
    // one snapshot so far: the minute in progress is the only point
    assert_eq!(t["minutes"].as_array().unwrap().len(), 1);
    assert_eq!(t["requests"]["2xx"], json!([5.0]));
    assert_eq!(t["requests"]["4xx"], json!([1.0]));
    assert_eq!(t["requests"]["5xx"], json!([0.0]));
    assert!(t["ttfb_p50_ms"][0].as_f64().unwrap() > 0.0);
    assert!(t["ttfb_p95_ms"][0].as_f64().unwrap() >= t["ttfb_p50_ms"][0].as_f64().unwrap());
    assert!(t["credits"][0].as_f64().unwrap() > 0.0);
    // a later snapshot closes the minute: its point stays, a new one starts at zero
    r.gateway.traffic.sample(&r.gateway.metrics);
    let (_, v) = admin(&r, "GET", "/admin/stats", Some(ADMIN)).await;
    assert_eq!(v["traffic"]["requests"]["2xx"], json!([5.0, 0.0]));

    let f = &v["failures"][0];
    assert_eq!(f["status"], 400);
    assert_eq!(f["route"], "/v1/chat/completions");
    assert_eq!(f["account"], "", "it never reached an account");
    assert!(f["message"].as_str().unwrap().contains("no-such-model"));
    assert_eq!(v["failures"].as_array().unwrap().len(), 1);
    let models = v["models"]["models"].as_array().unwrap();
    assert!(models.iter().any(|m| m["id"] == "claude-sonnet-4.5"));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["protocol"], "q");

    let (s, v) = admin(&r, "POST", "/admin/models/reload", Some(ADMIN)).await;
    assert_eq!(s, 200);
    assert!(v["models"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_200_is_among_the_failures() {
    use kiro_gateway::mock::{Fault, Reply, Script};
    let r = with_admin().await;
    r.mock.push_reply(Reply::Stream(
        Script::text("a long answer cut short", 3).fault(Fault::BadCrcAt(4)),
    ));
    let (s, _, body) = r
        .chat(json!({"model": "claude-sonnet-4-5", "stream": true,
                     "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(s, 200);
    assert!(!String::from_utf8_lossy(&body).contains("[DONE]"));
    let (_, v) = admin(&r, "GET", "/admin/stats", Some(ADMIN)).await;
    let f = &v["failures"][0];
    assert_eq!(f["status"], 502, "{v}");
    assert_eq!(f["account"], "default");
    assert!(f["message"].as_str().unwrap().contains("corrupt"), "{f}");
}
