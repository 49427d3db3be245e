//! Golden SSE transcripts for both dialects: text, prompt-tag thinking, native reasoning
//! (signed, redacted, service usage with cache figures), a `MAX_TOKENS` stop with a wrapped
//! metadata payload, tool use (arguments cut inside escapes) and an error mid-stream, compared event by event as parsed JSON. Response ids and timestamps
//! are masked; everything else (event order, block indexes, deltas, stop reasons, usage) must
//! match `tests/fixtures/*.json` exactly. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites
//! the fixtures (review the diff before committing it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::start;
use kiro_gateway::mock::{Fault, MockEvent, Reply, Script};
use serde_json::{json, Value};

const TRICKY_ARGS: &str = r#"{"path":"C:\\tmp\\a \"b\".txt","text":"line1\nline2 é 😀","n":[1,2]}"#;

/// Named answers; the `native_` ones run against a catalogue that advertises native reasoning.
fn scripts() -> Vec<(&'static str, Script)> {
    vec![
        ("text", Script::text("Hello, wörld! 日本語 😀", 5)),
        (
            "native_reasoning",
            Script::new()
                .metadata()
                .event(MockEvent::Reasoning {
                    text: "Compare: 2 < 3, é.".into(),
                    signature: Some("c2lnbmF0dXJl".into()),
                    delta: 6,
                })
                .event(MockEvent::RedactedReasoning("cmVkYWN0ZWQ=".into()))
                .text_deltas("Yes: 2 < 3.", 4)
                .event(MockEvent::TokenUsage {
                    usage: json!({"uncachedInputTokens": 15, "cacheReadInputTokens": 2048,
                                  "cacheWriteInputTokens": 0, "outputTokens": 31, "totalTokens": 2094}),
                    stop_reason: Some("END_TURN".into()),
                })
                .end(),
        ),
        (
            "service_usage_max_tokens",
            Script::new()
                .metadata()
                .text_deltas("A long answer", 4)
                .event(MockEvent::Wrapped(Box::new(MockEvent::TokenUsage {
                    usage: json!({"uncachedInputTokens": 900, "outputTokens": 64, "totalTokens": 964}),
                    stop_reason: Some("MAX_TOKENS".into()),
                })))
                .end(),
        ),
        (
            "thinking",
            Script::text("<thinking>Is 2 < 3? Yes, é.</thinking>\n\nIt is: 2 < 3.", 4),
        ),
        (
            "tool_use",
            Script::new()
                .metadata()
                .text_deltas("Let me check.", 7)
                .event(MockEvent::ToolCall {
                    id: "tooluse_golden".into(),
                    name: "write_file".into(),
                    arguments: TRICKY_ARGS.into(),
                    fragment: 6,
                })
                .end(),
        ),
        (
            "error_mid_stream",
            Script::text("partial answer here", 4).fault(Fault::ExceptionAt {
                frame: 3,
                kind: "InternalServerException".into(),
                message: "Encountered an unexpected error".into(),
            }),
        ),
    ]
}

async fn runner(name: &str) -> common::Running {
    if !name.starts_with("native_") {
        return start().await;
    }
    let schema = json!({"type": "object", "properties": {"thinking": {"type": "object",
        "properties": {"type": {"enum": ["enabled"]}, "budget_tokens": {"type": "integer"}}}}});
    let cfg = kiro_gateway::mock::MockConfig {
        model_fields: vec![(
            "claude-sonnet-4.5".into(),
            json!({"additionalModelRequestFieldsSchema": schema}),
        )],
        ..Default::default()
    };
    common::start_with(cfg, |_| {}).await
}

fn mask(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let generated = |s: &str| {
                        ["msg_", "chatcmpl-", "resp_", "fc_", "rs_", "ctc_"]
                            .iter()
                            .any(|p| s.starts_with(p))
                    };
                    if ((k == "id" || k == "item_id") && x.as_str().is_some_and(generated))
                        || k == "created"
                        || k == "created_at"
                    {
                        *x = json!("<masked>");
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// `[{"event": name|null, "data": json|"[DONE]"}]`
fn parse_sse(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut event = Value::Null;
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    event = json!(n);
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = if d == "[DONE]" {
                        json!("[DONE]")
                    } else {
                        mask(serde_json::from_str(d).unwrap())
                    };
                }
            }
            json!({"event": event, "data": data})
        })
        .collect()
}

fn check(name: &str, got: Vec<Value>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{name}: event {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{name}: event count");
}

#[tokio::test]
async fn anthropic_transcripts_match_the_golden_files() {
    for (name, script) in scripts() {
        let r = runner(name).await;
        r.mock.push_reply(Reply::Stream(script));
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
            "tools": [{"name": "write_file", "description": "Write a file",
                       "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "Go"}]});
        let (status, _, bytes) = r
            .send(r.req("POST", "/v1/messages", body.to_string()))
            .await;
        assert_eq!(status, 200);
        check(&format!("anthropic_{name}"), parse_sse(&bytes));
    }
}

#[tokio::test]
async fn openai_transcripts_match_the_golden_files() {
    for (name, script) in scripts() {
        let r = runner(name).await;
        r.mock.push_reply(Reply::Stream(script));
        let body = json!({"model": "claude-sonnet-4-5", "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "write_file", "description": "Write a file",
                       "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
            "messages": [{"role": "user", "content": "Go"}]});
        let (status, _, bytes) = r.chat(body).await;
        assert_eq!(status, 200);
        check(&format!("openai_{name}"), parse_sse(&bytes));
    }
}

#[tokio::test]
async fn responses_transcripts_match_the_golden_files() {
    for (name, script) in scripts() {
        if !["text", "thinking", "tool_use", "error_mid_stream"].contains(&name) {
            continue;
        }
        let r = runner(name).await;
        r.mock.push_reply(Reply::Stream(script));
        let body = json!({"model": "claude-sonnet-4-5", "stream": true, "input": "Go",
            "tools": [{"type": "function", "name": "write_file", "description": "Write a file",
                       "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]});
        let (status, _, bytes) = r
            .send(r.req("POST", "/v1/responses", body.to_string()))
            .await;
        assert_eq!(status, 200);
        check(&format!("responses_{name}"), parse_sse(&bytes));
    }
}

#[test]
fn the_tool_fixture_reassembles_to_the_exact_arguments() {
    // guards the golden files themselves: the deltas they hold must rebuild the arguments
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic_tool_use.json");
    let events: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let args: String = events
        .iter()
        .filter_map(|e| e["data"]["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(args, TRICKY_ARGS);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openai_tool_use.json");
    let events: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let args: String = events
        .iter()
        .filter_map(|e| {
            e["data"]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(args, TRICKY_ARGS);
}
