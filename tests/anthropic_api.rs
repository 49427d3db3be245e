//! The Anthropic Messages API end to end against the mock Kiro.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::start;
use kiro_gateway::mock::{MockEvent, Reply, Script};
use serde_json::{json, Value};

fn anthropic_error(body: &[u8], kind: &str) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

fn body(v: Value) -> String {
    v.to_string()
}

#[tokio::test]
async fn non_stream_message_with_text_and_tool_use() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(
        Script::new()
            .metadata()
            .text_deltas("Checking ", 3)
            .tool_call("tooluse_1", "get_weather", r#"{"city":"Paris \"FR\""}"#)
            .end(),
    ));
    let req = json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 256,
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "weather?"}]});
    let (status, headers, bytes) = r.send(r.req("POST", "/v1/messages", body(req))).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("request-id"));
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "Checking "})
    );
    assert_eq!(
        v["content"][1],
        json!({"type": "tool_use", "id": "tooluse_1", "name": "get_weather", "input": {"city": "Paris \"FR\""}})
    );
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let sent = &r.mock.requests_to("/generateAssistantResponse")[0].body;
    assert_eq!(
        sent["conversationState"]["currentMessage"]["userInputMessage"]["modelId"],
        "claude-sonnet-4.5"
    );
}

#[tokio::test]
async fn validation_and_auth_errors_use_the_anthropic_shape() {
    let r = start().await;
    let no_max =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]});
    let (status, headers, bytes) = r.send(r.req("POST", "/v1/messages", body(no_max))).await;
    assert_eq!(status, 400);
    assert!(headers.contains_key("request-id"));
    anthropic_error(&bytes, "invalid_request_error");
    let (status, _, bytes) = r.send(r.req("POST", "/v1/messages", "{oops")).await;
    assert_eq!(status, 400);
    anthropic_error(&bytes, "invalid_request_error");
    let unknown =
        json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let (status, _, bytes) = r.send(r.req("POST", "/v1/messages", body(unknown))).await;
    assert_eq!(status, 400);
    anthropic_error(&bytes, "invalid_request_error");
    assert_eq!(r.mock.generate_calls(), 0);

    for header in [("authorization", "Bearer nope"), ("x-api-key", "nope")] {
        let mut req = r.req("POST", "/v1/messages?beta=true", "{}");
        req.headers_mut().remove("authorization");
        req.headers_mut()
            .insert(header.0, header.1.parse().unwrap());
        let (status, _, bytes) = r.send(req).await;
        assert_eq!(status, 401);
        anthropic_error(&bytes, "authentication_error");
    }
    let mut req = r.req(
        "POST",
        "/v1/messages",
        body(json!({"model": "claude-sonnet-4-5", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]})),
    );
    req.headers_mut().remove("authorization");
    req.headers_mut()
        .insert("x-api-key", "test-key".parse().unwrap());
    let (status, _, _) = r.send(req).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn count_tokens_estimates_without_calling_kiro() {
    let r = start().await;
    let small =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello"}]});
    let big = json!({"model": "claude-sonnet-4-5", "system": "rules ".repeat(500),
        "tools": [{"name": "t", "description": "a tool", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "hello"}]});
    let (s1, _, b1) = r
        .send(r.req("POST", "/v1/messages/count_tokens", body(small)))
        .await;
    let (s2, _, b2) = r
        .send(r.req("POST", "/v1/messages/count_tokens", body(big)))
        .await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200));
    let n1 = serde_json::from_slice::<Value>(&b1).unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    let n2 = serde_json::from_slice::<Value>(&b2).unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(n1 > 0 && n2 > n1 + 500, "{n1} {n2}");
    assert_eq!(r.mock.generate_calls(), 0);
}

#[tokio::test]
async fn models_list_in_anthropic_shape_for_anthropic_clients() {
    let r = start().await;
    let mut req = r.req("GET", "/v1/models?limit=1000", "");
    req.headers_mut()
        .insert("anthropic-version", "2023-06-01".parse().unwrap());
    let (status, _, bytes) = r.send(req).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["has_more"], false);
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "claude-sonnet-4.5" && m["type"] == "model"));
    assert_eq!(v["first_id"], v["data"][0]["id"]);
}

/// A request shaped like Claude Code's: the attribution block and long system blocks with
/// cache_control, 24 tools (MCP names, one description over 10 000 characters, a server tool),
/// tool_result turns with an error and images, replayed thinking, a mid-conversation system
/// message, the beta query and headers.
#[tokio::test]
async fn a_claude_code_shaped_request_reaches_kiro_well_formed() {
    let r = start().await;
    let mut tools: Vec<Value> = (0..22)
        .map(|i| json!({"name": format!("mcp__server__tool_{i}"), "description": format!("Tool number {i}"),
            "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}, "required": ["arg"],
                             "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"}}))
        .collect();
    tools.push(json!({"name": "Bash", "description": "Run a shell command. ".repeat(600),
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        "cache_control": {"type": "ephemeral"}}));
    tools.push(
        json!({"name": "Read", "description": "Read a file", "input_schema": {"type": "object",
        "properties": {"file_path": {"type": "string"}}, "required": []}}),
    );
    tools.push(json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 5}));
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let req = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 64000, "stream": true,
        "metadata": {"user_id": "user_abc_account__session_123"},
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.300; cc_entrypoint=cli; cch=1;"},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Follow the repository conventions. ".repeat(300), "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "tools": tools,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>context</system-reminder>"},
                                         {"type": "text", "text": "Fix the failing test", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should read the file first.", "signature": "sig_abc"},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/repo/a.rs"}},
                {"type": "tool_use", "id": "toolu_02", "name": "Bash", "input": {"command": "cargo test"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "fn main() {}"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": true,
                 "content": [{"type": "text", "text": "test failed"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]}]},
            {"role": "system", "content": "The user changed the file."},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xyz"},
                {"type": "tool_use", "id": "toolu_03", "name": "mcp__server__tool_3", "input": {"arg": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_03", "content": [{"type": "text", "text": "ok"}]}]}
        ]
    });
    let mut http_req = r.req("POST", "/v1/messages?beta=true", body(req));
    let h = http_req.headers_mut();
    h.insert("anthropic-version", "2023-06-01".parse().unwrap());
    h.insert(
        "anthropic-beta",
        "claude-code-20250219,interleaved-thinking-2025-05-14,context-1m-2025-08-07"
            .parse()
            .unwrap(),
    );
    h.insert("x-claude-code-session-id", "s1".parse().unwrap());
    r.mock.push_reply(Reply::Stream(
        Script::new()
            .metadata()
            .event(MockEvent::Text("Done.".into()))
            .end(),
    ));
    let (status, _, bytes) = r.send(http_req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("event: message_stop"), "{text}");
    // the mock validates like the service: reaching it with a 200 means it was well formed;
    // check what the translation did on top
    let sent = &r.mock.requests_to("/generateAssistantResponse")[0].body;
    let cs = &sent["conversationState"];
    let first = cs["history"][0]["userInputMessage"]["content"]
        .as_str()
        .unwrap();
    // the thinking request (budget 4000) is the only text ahead of the system prompt
    assert!(
        first.starts_with("<thinking_mode>enabled</thinking_mode>\n<max_thinking_length>4000</max_thinking_length>\n\nYou are Claude Code"),
        "{first:.200}"
    );
    assert!(
        !first.contains("x-anthropic-billing-header"),
        "attribution block dropped"
    );
    assert!(
        first.contains("## Tool: Bash"),
        "the long Bash description moved to the system prompt"
    );
    let cur = &cs["currentMessage"]["userInputMessage"];
    let tools = cur["userInputMessageContext"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 24, "custom tools kept, server tool dropped");
    assert!(tools
        .iter()
        .all(|t| t["toolSpecification"]["inputSchema"]["json"]
            .get("additionalProperties")
            .is_none()));
    assert!(tools
        .iter()
        .all(|t| t["toolSpecification"]["inputSchema"]["json"]
            .get("$schema")
            .is_none()));
    let history = cs["history"].as_array().unwrap();
    let results = &history[2]["userInputMessage"]["userInputMessageContext"]["toolResults"];
    assert_eq!(
        results[1],
        json!({"toolUseId": "toolu_02", "content": [{"text": "test failed"}], "status": "error"})
    );
    assert_eq!(history[2]["userInputMessage"]["images"][0]["format"], "png");
    assert!(history[2]["userInputMessage"]["content"]
        .as_str()
        .unwrap()
        .contains("[System message]\nThe user changed the file."));
    assert_eq!(
        cur["userInputMessageContext"]["toolResults"][0]["toolUseId"],
        "toolu_03"
    );
    let body_text = sent.to_string();
    assert!(
        !body_text.contains("I should read the file first"),
        "replayed thinking is not sent"
    );
}
