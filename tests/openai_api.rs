//! The bundled server's OpenAI API end to end: a real listener on 127.0.0.1:0, the mock Kiro
//! behind it, requests over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{start, start_with};

use std::time::Duration;

use http_body_util::BodyExt;
use kiro_gateway::mock::{Fault, MockConfig, Reply, Script};
use serde_json::{json, Value};

fn hello(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
           "messages": [{"role": "user", "content": "Hello"}]})
}

fn sse_events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| {
            if d == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

fn assert_openai_error(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

#[tokio::test]
async fn non_stream_answer_with_credits_header_and_usage() {
    let r = start().await;
    r.mock
        .push_reply(Reply::Stream(Script::text("Bonjour, ça va ? 日本", 3)));
    let (status, headers, body) = r.chat(hello(false)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Bonjour, ça va ? 日本"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(headers["x-kiro-credits"], "0.0148");
    assert_eq!(v["usage"]["credits_used"], 0.0148);
    // prompt tokens from the service's context figure: 1.25 % of 200 000
    assert_eq!(v["usage"]["prompt_tokens"], 2500);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        2500 + v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let sent = &r.mock.requests_to("/generateAssistantResponse")[0].body;
    assert_eq!(
        sent["conversationState"]["currentMessage"]["userInputMessage"]["modelId"],
        "claude-sonnet-4.5"
    );
    assert_eq!(
        sent["profileArn"],
        r.mock.config().profile_arn,
        "desktop accounts send the ARN"
    );
}

#[tokio::test]
async fn mid_stream_failures_end_with_an_error_event_and_no_done() {
    for fault in [
        Fault::ResetAt(3),
        Fault::BadCrcAt(3),
        Fault::TruncateBeforeEnd,
        Fault::ExceptionAt {
            frame: 3,
            kind: "InternalServerException".into(),
            message: "boom".into(),
        },
    ] {
        let r = start().await;
        r.mock.push_reply(Reply::Stream(
            Script::text("alpha beta gamma delta", 4).fault(fault.clone()),
        ));
        let (status, headers, body) = r.chat(hello(true)).await;
        assert_eq!(status, 200, "{fault:?}");
        assert_eq!(headers["content-type"], "text/event-stream");
        let events = sse_events(&body);
        let last = events.last().unwrap();
        assert!(
            last["error"]["message"].is_string(),
            "{fault:?}: {events:?}"
        );
        assert!(!events.contains(&json!("[DONE]")), "{fault:?}");
        assert!(
            events
                .iter()
                .all(|e| e["choices"][0]["finish_reason"].is_null()),
            "{fault:?}: no finish_reason after a failure"
        );
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(
            "alpha beta gamma delta".starts_with(&text),
            "{fault:?}: corrupted text {text:?}"
        );
    }
}

#[tokio::test]
async fn non_stream_failure_is_a_502_not_a_partial_answer() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::text("partial answer", 2).fault(Fault::TruncateBeforeEnd),
    ));
    let (status, _, body) = r.chat(hello(false)).await;
    assert_eq!(status, 502);
    let v = assert_openai_error(&body);
    assert_eq!(v["error"]["code"], "upstream_truncated");
}

#[tokio::test]
async fn retries_a_5xx_and_refreshes_once_on_a_stale_token() {
    let r = start().await;
    r.mock.push_reply(Reply::server_error(503));
    let (status, _, _) = r.chat(hello(false)).await;
    assert_eq!(status, 200);
    assert_eq!(r.mock.generate_calls(), 2);
    let gen = r.mock.requests_to("/generateAssistantResponse");
    assert_eq!(gen[1].headers["amz-sdk-request"], "attempt=2; max=5");

    r.mock.revoke_access_tokens();
    let before = r.mock.desktop_refreshes();
    let (status, _, _) = r.chat(hello(true)).await;
    assert_eq!(status, 200);
    assert_eq!(r.mock.desktop_refreshes(), before + 1);
}

#[tokio::test]
async fn upstream_400_is_passed_through_and_never_retried() {
    let r = start().await;
    r.mock.fail_next(
        3,
        400,
        r#"{"message":"Improperly formed request.","reason":null}"#,
    );
    let (status, _, body) = r.chat(hello(false)).await;
    assert_eq!(status, 400);
    let v = assert_openai_error(&body);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Improperly formed request."));
    assert_eq!(r.mock.generate_calls(), 1);
}

#[tokio::test]
async fn exhausted_retries_return_the_upstream_status_and_message() {
    let r = start().await;
    r.mock.fail_next(
        5,
        429,
        r#"{"message":"Rate exceeded","reason":"USER_REQUEST_RATE_EXCEEDED"}"#,
    );
    let (status, _, body) = r.chat(hello(true)).await;
    assert_eq!(status, 429);
    let v = assert_openai_error(&body);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Rate exceeded"));
    assert_eq!(r.mock.generate_calls(), 3);
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    let r = start_with(MockConfig::default(), |c| {
        c.kiro_api_url = "http://127.0.0.1:9".into(); // discard port: nothing listens
        c.retry_max_attempts = 2;
    })
    .await;
    let (status, _, body) = r.chat(hello(false)).await;
    assert_eq!(status, 502);
    let v = assert_openai_error(&body);
    assert_eq!(v["error"]["code"], "upstream_unreachable");
}

#[tokio::test]
async fn oversized_bodies_get_a_413_in_openai_shape() {
    let r = start_with(MockConfig::default(), |c| c.max_body_bytes = 1024).await;
    let big = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, _, body) = r.chat(big).await;
    assert_eq!(status, 413);
    assert_openai_error(&body);
    assert_eq!(r.mock.generate_calls(), 0);
}

#[tokio::test]
async fn keys_are_checked_on_every_v1_route_with_either_header() {
    let r = start().await;
    let mut req = r.req("GET", "/v1/models", "");
    req.headers_mut().remove("authorization");
    req.headers_mut()
        .insert("x-api-key", "test-key".parse().unwrap());
    let (status, _, body) = r.send(req).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "claude-sonnet-4.5"));
    let mut req = r.req("GET", "/v1/models/claude-sonnet-4-5", "");
    req.headers_mut().remove("authorization");
    let (status, _, body) = r.send(req).await;
    assert_eq!(status, 401);
    assert_openai_error(&body);
    // health is open and shows no secret
    let (status, _, body) = r.send(r.req("GET", "/health", "")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("mock-access") && !text.contains("mock-refresh"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_requests_get_openai_errors_never_framework_bodies() {
    let r = start().await;
    for (body, status) in [
        ("{not json", 400),
        ("{\"messages\": []}", 400),
        ("{\"model\": \"claude-sonnet-4-5\", \"messages\": []}", 400),
        (
            "{\"model\": \"gpt-5\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            400,
        ),
    ] {
        let (s, _, b) = r.send(r.req("POST", "/v1/chat/completions", body)).await;
        assert_eq!(s, status, "{body}");
        assert_openai_error(&b);
    }
    let (s, _, b) = r.send(r.req("GET", "/v1/chat/completions", "")).await;
    assert_eq!(s, 405);
    assert_openai_error(&b);
    let (s, _, b) = r.send(r.req("GET", "/v1/nothing-here", "")).await;
    assert_eq!(s, 404);
    assert_openai_error(&b);
    assert_eq!(r.mock.generate_calls(), 0);
}

#[tokio::test]
async fn duplicate_slashes_are_routed() {
    let r = start().await;
    let (status, _, _) = r.send(r.req("GET", "/v1//models", "")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_stream() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::text(&"word ".repeat(2000), 5).write_pause(Duration::from_millis(1)),
    ));
    let resp = r
        .http
        .request(r.req("POST", "/v1/chat/completions", hello(true).to_string()))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    assert_eq!(r.mock.open_streams(), 1);
    drop(body);
    common::eventually(
        "the mock to see its stream closed",
        Duration::from_secs(2),
        || r.mock.open_streams() == 0,
    )
    .await;
    assert_eq!(r.mock.open_streams(), 0);
}

#[tokio::test]
async fn debug_capture_keeps_a_folder_per_request_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let r = start_with(MockConfig::default(), move |c| {
        c.debug_mode = kiro_gateway::layers::DebugMode::All;
        c.debug_dir = d;
        c.debug_keep = 2;
    })
    .await;
    for i in 0..3 {
        r.mock
            .push_reply(Reply::Stream(Script::text(&format!("answer {i}"), 4)));
        let (s, _, _) = r.chat(hello(i % 2 == 0)).await;
        assert_eq!(s, 200);
    }
    // files are written off the request path; wait for them
    let folders = || {
        let mut f: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        f.sort();
        f
    };
    // the last request's folder is in (it is written when its body ends, which may be just
    // after the client has read the last byte) and the oldest is rotated away
    common::eventually(
        "the last capture folder written and the oldest rotated away",
        Duration::from_secs(3),
        || {
            let f = folders();
            f.len() == 2
                && f.last().is_some_and(|p| {
                    std::fs::read_to_string(p.join("response_stream_raw.txt"))
                        .is_ok_and(|t| t.contains("er 2"))
                })
        },
    )
    .await;
    let folders = folders();
    assert_eq!(folders.len(), 2, "rotated to DEBUG_KEEP");
    let last = folders.last().unwrap();
    for f in [
        "request_body.json",
        "kiro_request_body.json",
        "response_stream_raw.txt",
        "response_stream_modified.txt",
        "app_logs.txt",
    ] {
        assert!(last.join(f).exists(), "{f}");
    }
    let raw = std::fs::read_to_string(last.join("response_stream_raw.txt")).unwrap();
    assert!(raw.contains("assistantResponseEvent"));
    let modified = std::fs::read_to_string(last.join("response_stream_modified.txt")).unwrap();
    // the third request streamed: what the client got, chunk by chunk, to the end
    assert!(
        modified.contains("chat.completion.chunk") && modified.ends_with("data: [DONE]\n\n"),
        "{modified}"
    );
    for entry in std::fs::read_dir(last).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !text.contains("test-key")
                && !text.contains("mock-access-")
                && !text.contains("mock-refresh-")
        );
    }
}

#[tokio::test]
async fn output_cut_for_length_finishes_with_length_not_an_error() {
    let cut = || Fault::ExceptionAt {
        frame: 3,
        kind: "ContentLengthExceededException".into(),
        message: "Output too long".into(),
    };
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::text("one two three four", 4).fault(cut()),
    ));
    let (status, _, body) = r.chat(hello(false)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "one two ");

    r.mock.push_reply(Reply::Stream(
        Script::text("one two three four", 4).fault(cut()),
    ));
    let (_, _, body) = r.chat(hello(true)).await;
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap(), &json!("[DONE]"));
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "length"));
}

#[tokio::test]
async fn cors_is_off_by_default_and_on_for_configured_origins() {
    let r = start().await;
    let mut req = r.req("GET", "/health", "");
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let (_, headers, _) = r.send(req).await;
    assert!(!headers.contains_key("access-control-allow-origin"));

    let r = start_with(MockConfig::default(), |c| {
        c.cors_allow_origins = vec!["https://app.example".into()]
    })
    .await;
    let mut req = r.req("GET", "/health", "");
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let (_, headers, _) = r.send(req).await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
}
