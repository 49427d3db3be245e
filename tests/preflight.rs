//! Request pre-flight, the size guard and truncated tool calls: what would get Kiro's opaque
//! `400 Improperly formed request.` is repaired or refused with a message that names the place
//! and the rule, and a tool call the service cut short is never completed with invented
//! arguments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{start, Running};
use kiro_gateway::mock::{MockEvent, Reply, Script};
use serde_json::{json, Value};

async fn anthropic(r: &Running, body: Value) -> (u16, http::HeaderMap, Vec<u8>) {
    let (s, h, b) = r
        .send(r.req("POST", "/v1/messages", body.to_string()))
        .await;
    (s.as_u16(), h, b.to_vec())
}

async fn openai(r: &Running, body: Value) -> (u16, http::HeaderMap, Vec<u8>) {
    let (s, h, b) = r.chat(body).await;
    (s.as_u16(), h, b.to_vec())
}

fn sse(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
        .collect()
}

// ---- truncated tool calls ----

/// Argument texts cut mid-string, mid-escape and between the halves of a surrogate pair.
const CUTS: &[(&str, &str)] = &[
    (
        "mid-string",
        r#"{"path":"notes.txt","text":"a long line that was cu"#,
    ),
    ("mid-escape", r#"{"path":"C:\\tmp\\"#),
    ("mid-surrogate", r#"{"path":"x","text":"emoji \ud83d"#),
];

fn cut_script(args: &str) -> Script {
    Script::new()
        .metadata()
        .text_deltas("Writing it.", 5)
        .event(MockEvent::ToolCall {
            id: "tooluse_ok".into(),
            name: "read_file".into(),
            arguments: r#"{"path":"a.txt"}"#.into(),
            fragment: 4,
        })
        .event(MockEvent::ToolCall {
            id: "tooluse_cut".into(),
            name: "write_file".into(),
            arguments: args.into(),
            fragment: 5,
        })
        .end()
}

fn tools_openai() -> Value {
    json!([
        {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}])
}

fn tools_anthropic() -> Value {
    json!([{"name": "read_file", "input_schema": {"type": "object"}},
           {"name": "write_file", "input_schema": {"type": "object"}}])
}

#[tokio::test]
async fn a_tool_call_cut_short_ends_with_length_in_openai_and_is_never_completed() {
    let r = start().await;
    for (label, args) in CUTS {
        // stream: fragments were forwarded as they came; the finish says length
        r.mock.push_reply(Reply::Stream(cut_script(args)));
        let (s, _, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "stream": true, "tools": tools_openai(),
                   "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let chunks = sse(&b);
        let finishes: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finishes, ["length"], "{label}");
        let sent: String = chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["index"] == 1)
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(
            sent, *args,
            "{label}: exactly what the service sent, nothing added"
        );

        // non-stream: the call keeps the arguments as received
        r.mock.push_reply(Reply::Stream(cut_script(args)));
        let (s, _, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "tools": tools_openai(),
                   "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{label}");
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"]["arguments"], r#"{"path":"a.txt"}"#);
        assert_eq!(calls[1]["function"]["arguments"], *args, "{label}");
    }
}

#[tokio::test]
async fn a_tool_call_cut_short_ends_with_max_tokens_in_anthropic() {
    let r = start().await;
    for (label, args) in CUTS {
        r.mock.push_reply(Reply::Stream(cut_script(args)));
        let (s, _, b) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
                   "tools": tools_anthropic(), "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let events = sse(&b);
        let cut_index = events
            .iter()
            .find(|e| e["content_block"]["id"] == "tooluse_cut")
            .unwrap()["index"]
            .clone();
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "content_block_stop" && e["index"] == cut_index),
            "{label}: the cut block is closed"
        );
        let delta = events
            .iter()
            .find(|e| e["type"] == "message_delta")
            .unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens", "{label}");
        assert_eq!(events.last().unwrap()["type"], "message_stop");
        let sent: String = events
            .iter()
            .filter(|e| e["index"] == cut_index)
            .filter_map(|e| e["delta"]["partial_json"].as_str())
            .collect();
        assert!(
            args.starts_with(&sent),
            "{label}: only what the service sent: {sent}"
        );

        r.mock.push_reply(Reply::Stream(cut_script(args)));
        let (s, _, b) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                   "tools": tools_anthropic(), "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stop_reason"], "max_tokens", "{label}");
        let uses: Vec<&Value> = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .collect();
        assert_eq!(
            uses.len(),
            1,
            "{label}: the cut call is left out, never given {{}}"
        );
        assert_eq!(uses[0]["id"], "tooluse_ok");
        assert!(!String::from_utf8_lossy(&b).contains("\"input\":{}"));
    }
}

#[tokio::test]
async fn a_tool_call_with_no_stop_event_is_checked_at_the_end() {
    let r = start().await;
    // start and fragments, never a stop event, then the stream's closing events
    let script = Script::new()
        .metadata()
        .event(MockEvent::Raw {
            event_type: "toolUseEvent".into(),
            payload: r#"{"name":"write_file","toolUseId":"t1"}"#.into(),
        })
        .event(MockEvent::Raw {
            event_type: "toolUseEvent".into(),
            payload: r#"{"input":"{\"path\":\"a","name":"write_file","toolUseId":"t1"}"#.into(),
        })
        .end();
    r.mock.push_reply(Reply::Stream(script.clone()));
    let (_, _, b) = openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "stream": true, "tools": tools_openai(),
               "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    assert!(sse(&b)
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));
    r.mock.push_reply(Reply::Stream(script));
    let (_, _, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
               "tools": tools_anthropic(), "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    let events = sse(&b);
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
}
