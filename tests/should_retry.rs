//! `x-should-retry` on every error answer, in the three APIs (OpenAI chat, Anthropic messages,
//! Responses): `false` where a retry cannot help (400, 401, 403 other than a refreshable token,
//! 404, 405, 413, 422, a used-up quota's 429), `true` for throttles, 5xx and 504. The SDKs obey
//! the header over their own status rules (they retry a 401 otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{start_with, Running};
use kiro_gateway::config::Config;
use kiro_gateway::mock::{MockConfig, Reply, Script};
use serde_json::json;

/// Path and a valid (non-streamed) body of each API.
const APIS: [&str; 3] = ["/v1/chat/completions", "/v1/messages", "/v1/responses"];

fn body(path: &str) -> String {
    match path {
        "/v1/messages" => json!({"model": "claude-sonnet-4-5", "max_tokens": 50,
                                 "messages": [{"role": "user", "content": "hi"}]}),
        "/v1/responses" => json!({"model": "claude-sonnet-4-5", "input": "hi"}),
        _ => json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    }
    .to_string()
}

async fn gateway() -> Running {
    start_with(MockConfig::default(), |c: &mut Config| {
        c.fake_reasoning = false;
        c.retry_base_delay_ms = 1;
        c.retry_max_delay_ms = 2;
        c.retry_max_attempts = 1;
        c.max_body_bytes = 4096;
        c.first_token_timeout_secs = 0.3;
        c.first_token_max_retries = 1;
    })
    .await
}

/// (status, x-should-retry) of one request.
async fn answer(
    r: &Running,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, String) {
    let (status, headers, bytes) = r.send(req).await;
    let v = headers
        .get("x-should-retry")
        .unwrap_or_else(|| {
            panic!(
                "{status}: no x-should-retry on {}",
                String::from_utf8_lossy(&bytes)
            )
        })
        .to_str()
        .unwrap()
        .to_owned();
    (status.as_u16(), v)
}

async fn with_reply(r: &Running, path: &str, reply: Reply) -> (u16, String) {
    r.mock.push_reply(reply);
    answer(r, r.req("POST", path, body(path))).await
}

#[tokio::test]
async fn errors_no_retry_can_fix_say_false() {
    let r = gateway().await;
    for path in APIS {
        // 401: a wrong key (the API-key layer, before any body is read)
        let mut req = r.req("POST", path, body(path));
        req.headers_mut().insert(
            "authorization",
            http::HeaderValue::from_static("Bearer wrong"),
        );
        assert_eq!(answer(&r, req).await, (401, "false".into()), "{path}");
        // 400: a body that is not JSON (the decode layer)
        assert_eq!(
            answer(&r, r.req("POST", path, "{not json")).await,
            (400, "false".into()),
            "{path}"
        );
        // 413: over MAX_BODY_BYTES
        let big = format!("{{\"model\":\"{}\"}}", "x".repeat(8192));
        assert_eq!(
            answer(&r, r.req("POST", path, big)).await,
            (413, "false".into()),
            "{path}"
        );
        // 405: a GET on a POST route
        assert_eq!(
            answer(&r, r.req("GET", path, "")).await,
            (405, "false".into()),
            "{path}"
        );
        // 400 and 422 from Kiro
        let bad = r#"{"message":"Improperly formed request.","reason":null}"#;
        for status in [400, 422] {
            let got = with_reply(
                &r,
                path,
                Reply::Status {
                    status,
                    body: bad.into(),
                },
            )
            .await;
            assert_eq!(got, (status, "false".into()), "{path}");
        }
        // 403: a suspended account (a refresh cannot fix it)
        let suspended = Reply::Status {
            status: 403,
            body: r#"{"message":"Your User ID temporarily is suspended.","reason":"TEMPORARILY_SUSPENDED"}"#.into(),
        };
        assert_eq!(
            with_reply(&r, path, suspended).await,
            (403, "false".into()),
            "{path}"
        );
        // 429: a used-up monthly quota
        let quota = Reply::Status {
            status: 402,
            body: r#"{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#
                .into(),
        };
        assert_eq!(
            with_reply(&r, path, quota).await,
            (429, "false".into()),
            "{path}"
        );
    }
    // 404: an unknown route, in both dialects
    for (path, anthropic) in [("/v1/nothing", false), ("/v1/nothing", true)] {
        let mut req = r.req("POST", path, "{}");
        if anthropic {
            req.headers_mut().insert(
                "anthropic-version",
                http::HeaderValue::from_static("2023-06-01"),
            );
        }
        assert_eq!(answer(&r, req).await, (404, "false".into()));
    }
    // 404: a kept response that is not there
    assert_eq!(
        answer(&r, r.req("GET", "/v1/responses/resp_nothing", "")).await,
        (404, "false".into())
    );
}

#[tokio::test]
async fn throttles_server_errors_and_timeouts_say_true() {
    let r = gateway().await;
    for path in APIS {
        assert_eq!(
            with_reply(&r, path, Reply::throttled()).await,
            (429, "true".into()),
            "{path}"
        );
        for status in [500, 503] {
            assert_eq!(
                with_reply(&r, path, Reply::server_error(status)).await,
                (status, "true".into()),
                "{path}"
            );
        }
        // 504: nothing within the first-token timeout
        let slow = Reply::Stream(Script::text("late", 1).header_delay(Duration::from_secs(3)));
        assert_eq!(
            with_reply(&r, path, slow).await,
            (504, "true".into()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_403_a_token_refresh_can_fix_says_true() {
    let bad_token =
        r#"{"message":"The bearer token included in the request is invalid.","reason":null}"#;
    for path in APIS {
        let r = gateway().await;
        // refreshed once and retried; the retry is refused again: the next request refreshes
        r.mock.fail_next(2, 403, bad_token);
        assert_eq!(
            answer(&r, r.req("POST", path, body(path))).await,
            (403, "true".into()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_streamed_request_refused_before_the_stream_carries_the_header_too() {
    let r = gateway().await;
    let quota = || Reply::Status {
        status: 402,
        body: r#"{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#
            .into(),
    };
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let mut v: serde_json::Value = serde_json::from_str(&body(path)).unwrap();
        v["stream"] = json!(true);
        r.mock.push_reply(quota());
        assert_eq!(
            answer(&r, r.req("POST", path, v.to_string())).await,
            (429, "false".into()),
            "{path}"
        );
        let mut req = r.req("POST", path, v.to_string());
        req.headers_mut().insert(
            "authorization",
            http::HeaderValue::from_static("Bearer wrong"),
        );
        assert_eq!(answer(&r, req).await, (401, "false".into()), "{path}");
    }
}
