//! Bad input: each case gets the dialect's error JSON and status, nothing reaches Kiro, and the
//! gateway keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use bytes::Bytes;
use common::{start, start_with, Running};
use http::StatusCode;
use kiro_gateway::mock::MockConfig;
use serde_json::{json, Value};

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";

fn assert_dialect_error(path: &str, status: StatusCode, want: u16, body: &[u8], case: &str) {
    assert_eq!(
        status.as_u16(),
        want,
        "{case} on {path}: {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{case}: not JSON: {}", String::from_utf8_lossy(body)));
    if path == ANTHROPIC {
        assert_eq!(v["type"], "error", "{case}: {v}");
        assert!(
            v["error"]["type"].is_string() && v["error"]["message"].is_string(),
            "{case}: {v}"
        );
    } else {
        assert!(
            v["error"]["message"].is_string() && v["error"]["type"].is_string(),
            "{case}: {v}"
        );
    }
}

async fn post(
    r: &Running,
    path: &str,
    body: impl Into<Bytes>,
    content_type: Option<&str>,
) -> (StatusCode, Bytes) {
    let mut req = r.req("POST", path, body);
    match content_type {
        Some(ct) => {
            req.headers_mut()
                .insert("content-type", ct.parse().unwrap());
        }
        None => {
            req.headers_mut().remove("content-type");
        }
    }
    let (s, _, b) = r.send(req).await;
    (s, b)
}

fn both(openai: Value, anthropic: Value) -> [(&'static str, Value); 2] {
    [(OPENAI, openai), (ANTHROPIC, anthropic)]
}

fn oa(messages: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "messages": messages})
}

fn an(messages: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages})
}

#[tokio::test]
async fn every_bad_request_is_refused_in_the_dialect_shape_and_forwards_nothing() {
    let r = start().await;
    let bad_png = json!([{"type": "text", "text": "look"}]);
    let _ = bad_png;
    let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
        ("missing messages", both(json!({"model": "claude-sonnet-4-5"}), json!({"model": "claude-sonnet-4-5", "max_tokens": 5})).to_vec()),
        ("empty messages", both(oa(json!([])), an(json!([]))).to_vec()),
        ("wrong field types", both(json!({"model": 5, "messages": "hi"}), json!({"model": "m", "max_tokens": "lots", "messages": [{"role": "user", "content": "x"}]})).to_vec()),
        ("unknown role", both(oa(json!([{"role": "wizard", "content": "x"}])), an(json!([{"role": "wizard", "content": "x"}]))).to_vec()),
        ("bad data URL", both(
            oa(json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not base64@@"}}]}])),
            an(json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "@@"}}]}])),
        ).to_vec()),
        ("unsupported image type", both(
            oa(json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,aGk="}}]}])),
            an(json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "aGk="}}]}])),
        ).to_vec()),
        ("tool schema not an object", both(
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": [1, 2]}}]}),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"name": "f", "input_schema": "string"}]}),
        ).to_vec()),
        ("tool arguments not JSON", vec![(OPENAI, oa(json!([{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}])))]),
        ("max_tokens <= 0", both(
            json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
        ).to_vec()),
        ("negative max_tokens", both(
            json!({"model": "claude-sonnet-4-5", "max_tokens": -5, "messages": [{"role": "user", "content": "x"}]}),
            json!({"model": "claude-sonnet-4-5", "max_tokens": -5, "messages": [{"role": "user", "content": "x"}]}),
        ).to_vec()),
    ];
    for (case, requests) in cases {
        for (path, body) in requests {
            let (s, b) = post(&r, path, body.to_string(), Some("application/json")).await;
            assert_dialect_error(path, s, 400, &b, case);
        }
    }
    // bodies that are not JSON at all
    for path in [OPENAI, ANTHROPIC] {
        for (case, body) in [
            ("malformed JSON", Bytes::from_static(b"{\"model\": ")),
            (
                "truncated body",
                Bytes::from_static(
                    b"{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"us",
                ),
            ),
            (
                "invalid UTF-8",
                Bytes::from_static(b"{\"model\":\"\xff\xfe\",\"messages\":[]}"),
            ),
            (
                "NUL bytes",
                Bytes::from_static(b"{\"model\":\"a\0b\",\"messages\":[]}\0"),
            ),
            ("empty body", Bytes::new()),
        ] {
            let (s, b) = post(&r, path, body, Some("application/json")).await;
            assert_dialect_error(path, s, 400, &b, case);
        }
        let (s, b) = post(
            &r,
            path,
            oa(json!([{"role": "user", "content": "x"}])).to_string(),
            Some("text/plain"),
        )
        .await;
        assert_dialect_error(path, s, 415, &b, "wrong content type");
        let (s, b) = post(&r, path, "a=b", Some("application/x-www-form-urlencoded")).await;
        assert_dialect_error(path, s, 415, &b, "form body");
    }
    assert_eq!(r.mock.generate_calls(), 0, "nothing reached Kiro");
    // and the gateway still answers
    let (s, _, _) = r
        .chat(oa(json!([{"role": "user", "content": "still up?"}])))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn huge_requests_are_refused_before_kiro_without_hurting_the_gateway() {
    let r = start_with(MockConfig::default(), |c| {
        c.max_body_bytes = 64 * 1024 * 1024
    })
    .await;
    let ten_thousand: Vec<Value> = (0..10_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("message number {i} with some words in it")}))
        .collect();
    let five_mb = "x".repeat(5 * 1024 * 1024);
    for path in [OPENAI, ANTHROPIC] {
        let mk = |messages: Value| {
            if path == OPENAI {
                oa(messages)
            } else {
                an(messages)
            }
        };
        let (s, b) = post(
            &r,
            path,
            mk(Value::Array(ten_thousand.clone())).to_string(),
            Some("application/json"),
        )
        .await;
        assert_dialect_error(path, s, 400, &b, "10 000 messages");
        assert!(String::from_utf8_lossy(&b).contains("prompt is too long"));
        let (s, b) = post(
            &r,
            path,
            mk(json!([{"role": "user", "content": five_mb}])).to_string(),
            Some("application/json"),
        )
        .await;
        assert_dialect_error(path, s, 400, &b, "a 5 MB message");
    }
    assert_eq!(r.mock.generate_calls(), 0);
    // over the body limit: 413
    let small = start_with(MockConfig::default(), |c| c.max_body_bytes = 1024 * 1024).await;
    for path in [OPENAI, ANTHROPIC] {
        let (s, b) = post(
            &small,
            path,
            an(json!([{"role": "user", "content": five_mb}])).to_string(),
            Some("application/json"),
        )
        .await;
        assert_dialect_error(path, s, 413, &b, "over the body limit");
    }
    let (s, _, _) = r
        .chat(oa(json!([{"role": "user", "content": "still up?"}])))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn only_root_and_health_answer_without_the_key() {
    let r = start().await;
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/claude-sonnet-4.5"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/unknown"),
        ("GET", "/admin"),
        ("DELETE", "/v1/chat/completions"),
    ] {
        let mut req = r.req(method, path, "{}");
        req.headers_mut().remove("authorization");
        let (s, _, body) = r.send(req).await;
        let open = path == "/" || path == "/health";
        if open {
            assert_eq!(s, 200, "{path}");
        } else {
            assert_eq!(
                s,
                401,
                "{method} {path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test]
async fn oversized_headers_and_slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = start().await;
    // a 200 KB header: refused, the server stays up
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let big = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    let (st, _, _) = r.send(r.req("GET", "/health", "")).await;
    assert_eq!(st, 200);
}
