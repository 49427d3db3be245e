//! Request pre-flight, the size guard and truncated tool calls: what would get Kiro's opaque
//! `400 Improperly formed request.` is repaired or refused with a message that names the place
//! and the rule, and a tool call the service cut short is never completed with invented
//! arguments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{sse_payloads, start, start_with, Running};
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
        let chunks = sse_payloads(&b);
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
        let events = sse_payloads(&b);
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
    assert!(sse_payloads(&b)
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));
    r.mock.push_reply(Reply::Stream(script));
    let (_, _, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
               "tools": tools_anthropic(), "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    let events = sse_payloads(&b);
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
}

// ---- pre-flight: each rule of spec 3.2, repaired or refused ----

fn history(up: &Value) -> Vec<Value> {
    up["conversationState"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": [], "additionalProperties": false}})
}

/// Sends an Anthropic request that breaks a rule the conversion repairs; the mock (which
/// refuses what the service would) must accept what went out.
async fn repaired(r: &Running, messages: Value, tools: Option<Value>) -> Value {
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": messages,
                          "thinking": {"type": "disabled"}});
    if let Some(t) = tools {
        body["tools"] = t;
    }
    r.mock.push_reply(Reply::Stream(Script::text("ok", 2)));
    let (s, _, b) = anthropic(r, body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(r.mock.rejections().is_empty(), "{:?}", r.mock.rejections());
    r.last_generate()
}

#[tokio::test]
async fn alternation_and_empty_contents_are_repaired() {
    let r = start().await;
    // starts with an assistant turn, two user turns in a row, an empty assistant turn
    let up = repaired(
        &r,
        json!([{"role": "assistant", "content": "earlier"},
               {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
               {"role": "assistant", "content": ""}, {"role": "user", "content": "three"}]),
        None,
    )
    .await;
    let h = history(&up);
    assert_eq!(h[0]["userInputMessage"]["content"], "(empty)");
    assert_eq!(h[1]["assistantResponseMessage"]["content"], "earlier");
    assert_eq!(h[2]["userInputMessage"]["content"], "one\ntwo");
    assert_eq!(h[3]["assistantResponseMessage"]["content"], "(empty)");
    // a trailing assistant turn: history, and the current message says Continue
    let up = repaired(
        &r,
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}]),
        None,
    )
    .await;
    assert_eq!(
        up["conversationState"]["currentMessage"]["userInputMessage"]["content"],
        "Continue"
    );
}

#[tokio::test]
async fn tool_pairing_rules_are_repaired() {
    let r = start().await;
    let call = |id: &str| json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}});
    let result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "sunny"});
    // unanswered call, orphaned result, duplicate result, a tool only named in history
    let up = repaired(
        &r,
        json!([{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": [call("t1"), call("t2")]},
               {"role": "user", "content": [result("t1"), result("t1"), result("t9")]},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "t3", "name": "old_tool", "input": {}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t3", "content": "done"}]}]),
        Some(json!([weather_tool()])),
    )
    .await;
    let text = up.to_string();
    let h = history(&up);
    let uses = h[1]["assistantResponseMessage"]["toolUses"]
        .as_array()
        .unwrap();
    assert_eq!(uses.len(), 1, "the unanswered call t2 became text: {text}");
    assert!(h[1]["assistantResponseMessage"]["content"]
        .as_str()
        .unwrap()
        .contains("t2"));
    let results = h[2]["userInputMessage"]["userInputMessageContext"]["toolResults"]
        .as_array()
        .unwrap();
    assert_eq!(results.len(), 1, "the duplicate and the orphan became text");
    let content = h[2]["userInputMessage"]["content"].as_str().unwrap();
    assert!(content.contains("t9") && content.contains("[Tool Result"));
    let tools = up["conversationState"]["currentMessage"]["userInputMessage"]
        ["userInputMessageContext"]["tools"]
        .as_array()
        .unwrap();
    assert!(tools
        .iter()
        .any(|t| t["toolSpecification"]["name"] == "old_tool"));
    // the schema was cleaned
    assert!(!text.contains("additionalProperties") && !text.contains("\"required\":[]"));

    // tool results in a request without tools: rendered as text
    let up = repaired(
        &r,
        json!([{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": [call("t1")]},
               {"role": "user", "content": [result("t1")]}]),
        None,
    )
    .await;
    assert!(!up.to_string().contains("toolResults"));
    assert!(up.to_string().contains("[Tool Result (t1)]"));
}

#[tokio::test]
async fn tool_definition_rules_are_repaired_or_refused_with_the_rule() {
    let r = start().await;
    // empty and long descriptions: placeholder, moved to the system prompt
    let long = "x".repeat(12_000);
    let up = repaired(
        &r,
        json!([{"role": "user", "content": "hi"}]),
        Some(
            json!([{"name": "a", "description": "", "input_schema": {"type": "object"}},
                    {"name": "b", "description": long, "input_schema": {"type": "object"}}]),
        ),
    )
    .await;
    let tools = &up["conversationState"]["currentMessage"]["userInputMessage"]
        ["userInputMessageContext"]["tools"];
    assert_eq!(tools[0]["toolSpecification"]["description"], "Tool: a");
    assert!(tools[1]["toolSpecification"]["description"]
        .as_str()
        .unwrap()
        .contains("Full documentation in system prompt"));

    // a bad name is refused, naming the field
    let (s, _, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
               "tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&b).contains("bad name!"));

    // with TOOL_DESCRIPTION_MAX_LENGTH=0 (never move) a long description is refused by the
    // pre-flight, which names the tool field and the rule
    let r = start_with(Default::default(), |c| c.tool_description_max_length = 0).await;
    for path in ["/v1/messages", "/v1/chat/completions"] {
        let body = if path == "/v1/messages" {
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"name": "b", "description": "x".repeat(12_000), "input_schema": {"type": "object"}}]})
        } else {
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "b", "description": "x".repeat(12_000),
                              "parameters": {"type": "object"}}}]})
        };
        let (s, _, b) = r.send(r.req("POST", path, body.to_string())).await;
        assert_eq!(s, 400, "{path}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("tools[0].description") && msg.contains("rule: tool_description"),
            "{path}: {msg}"
        );
        assert!(msg.contains("12000 characters"), "{msg}");
        if path == "/v1/messages" {
            assert_eq!(v["error"]["type"], "invalid_request_error");
        } else {
            assert_eq!(v["error"]["code"], "kiro_tool_description");
            assert_eq!(v["error"]["param"], "tools[0].description");
        }
    }
    assert_eq!(r.mock.generate_calls(), 0, "nothing broken went out");
}

#[tokio::test]
async fn image_rules_are_repaired_or_refused() {
    let r = start().await;
    // jpg → jpeg, data URL prefix stripped
    let jpeg = "/9j/4AAQSkZJRgABAQ==";
    let up = repaired(
        &r,
        json!([{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpg", "data": jpeg}},
            {"type": "text", "text": "what is it?"}]}]),
        None,
    )
    .await;
    let img = &up["conversationState"]["currentMessage"]["userInputMessage"]["images"][0];
    assert_eq!(img["format"], "jpeg");
    assert_eq!(img["source"]["bytes"], jpeg);
    // an unknown format, bytes of no image format and broken base64 are refused before
    // anything goes out
    let bmp = "Qk0eAAAAAAAAABoAAAA="; // "BM…", a bitmap
    for (media, data, needle) in [
        (
            "image/bmp",
            bmp,
            "image type \"bmp\" is not supported by Kiro",
        ),
        (
            "image/png",
            "aGVsbG8sIHdvcmxk",
            "image data is not a PNG, JPEG, GIF or WebP image (declared image/png)",
        ),
        (
            "image/png",
            "not base64!!",
            "image data is not valid base64",
        ),
    ] {
        let (s, _, b) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}]}]}),
        )
        .await;
        assert_eq!(s, 400);
        let v: Value = serde_json::from_slice(&b).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    }
}

#[tokio::test]
async fn an_image_whose_bytes_are_not_its_declared_type_goes_as_what_it_is() {
    // a JPEG declared image/png: Kiro (and the mock) refuse the mismatch with an opaque 400
    let jpeg = "/9j/4AAQSkZJRgABAQ==";
    let r = start().await;
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{jpeg}")}}]}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": jpeg}},
                {"type": "text", "text": "what is it?"}]}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "claude-sonnet-4-5", "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "what is it?"},
                {"type": "input_image", "image_url": format!("data:image/png;base64,{jpeg}")}]}]}),
        ),
    ];
    for (path, body) in bodies {
        r.mock.push_reply(Reply::Stream(Script::text("a photo", 3)));
        let (s, _, b) = r.send(r.req("POST", path, body.to_string())).await;
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
        let up = r.last_generate();
        let img = &up["conversationState"]["currentMessage"]["userInputMessage"]["images"][0];
        assert_eq!(
            img,
            &json!({"format": "jpeg", "source": {"bytes": jpeg}}),
            "{path}"
        );
    }
}

#[tokio::test]
async fn refusals_name_the_message_and_content_part_in_the_clients_numbering() {
    let r = start().await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let cases = [
        // OpenAI counts the system message: the broken image is messages[3].content[1]
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!!"}}]}]}),
            "messages[3].content[1]: image data is not valid base64",
        ),
        // Anthropic's system is separate: messages[2].content[0]
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "system": "be brief", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!!"}},
                    {"type": "text", "text": "what is it?"}]}]}),
            "messages[2].content[0]: image data is not valid base64",
        ),
        // the Responses API numbers `input`
        (
            "/v1/responses",
            json!({"model": "claude-sonnet-4-5", "input": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "what is it?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8sIHdvcmxk"}]}]}),
            "input[1].content[1]: image data is not a PNG, JPEG, GIF or WebP image (declared image/png)",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            "messages[1].tool_calls[0]: tool call arguments are not valid JSON",
        ),
    ];
    for (path, body, want) in cases {
        let (s, _, b) = r.send(r.req("POST", path, body.to_string())).await;
        assert_eq!(s, 400, "{path}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(want), "{path}: {msg}");
    }
    assert_eq!(r.mock.generate_calls(), 0, "nothing broken went out");
}

// ---- the size guard ----

fn big_conversation(turns: usize) -> Vec<Value> {
    let mut m = Vec::new();
    for i in 0..turns {
        m.push(json!({"role": "user", "content": format!("question {i}: {}", "q".repeat(20_000))}));
        m.push(
            json!({"role": "assistant", "content": format!("answer {i}: {}", "a".repeat(20_000))}),
        );
    }
    m.push(json!({"role": "user", "content": "the last question"}));
    m
}

#[tokio::test]
async fn over_the_payload_limit_clients_get_their_own_context_too_long_error() {
    let r = start().await;
    let messages = big_conversation(20); // about 800 KB
    let (s, _, b) = openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "messages": messages}),
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
    let (s, _, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": messages}),
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
    assert_eq!(r.mock.generate_calls(), 0);
}

#[tokio::test]
async fn the_services_content_length_refusal_reads_the_same() {
    let r = start_with(Default::default(), |c| c.kiro_max_payload_bytes = 0).await;
    r.expect_rejections
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let messages = big_conversation(20);
    let (s, _, b) = openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "messages": messages}),
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
    let (s, _, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": messages}),
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
}

#[tokio::test]
async fn auto_trim_drops_the_oldest_turns_whole_and_says_how_many() {
    let r = start_with(Default::default(), |c| c.auto_trim_payload = true).await;
    // a tool call and its result in the oldest turns: they go together
    let mut messages = vec![
        json!({"role": "user", "content": format!("first {}", "f".repeat(20_000))}),
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x".repeat(20_000)}]}),
        json!({"role": "assistant", "content": "it is cold"}),
    ];
    messages.extend(big_conversation(15));
    r.mock.push_reply(Reply::Stream(Script::text("ok", 2)));
    let (s, h, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": messages,
               "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let dropped: usize = h["x-kiro-trimmed-messages"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped >= 4, "{dropped}");
    let call = r.mock.requests_to("/generateAssistantResponse");
    let up = &call.last().unwrap();
    assert!(up.body_len <= 600_000, "{}", up.body_len);
    let text = up.body.to_string();
    assert!(!text.contains("first ff"), "the oldest turn went");
    assert!(!text.contains("\"t1\""), "the call went with its result");
    assert!(text.contains("the last question"));
    // the OpenAI dialect says it too
    r.mock.push_reply(Reply::Stream(Script::text("ok", 2)));
    let (s, h, _) = openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "messages": big_conversation(20)}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(h.contains_key("x-kiro-trimmed-messages"));
}

#[tokio::test]
async fn debug_mode_errors_keeps_the_exact_body_of_a_request_the_service_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let r = start_with(Default::default(), move |c| {
        c.debug_mode = kiro_gateway::layers::DebugMode::Errors;
        c.debug_dir = d;
    })
    .await;
    r.mock.push_reply(Reply::Status {
        status: 400,
        body: r#"{"message":"Improperly formed request.","reason":null}"#.into(),
    });
    let (s, _, _) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hé 😀"}]}),
    )
    .await;
    assert_eq!(s, 400);
    let sent = r.mock.requests_to("/generateAssistantResponse");
    let sent = sent.last().unwrap();
    // the folder is written off the request path, once the response is done
    let folders = || -> Vec<_> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .collect()
    };
    common::eventually(
        "the capture folder of the refused request",
        std::time::Duration::from_secs(2),
        || !folders().is_empty(),
    )
    .await;
    let folders = folders();
    assert_eq!(folders.len(), 1);
    let kept = std::fs::read(folders[0].path().join("kiro_request_body.json")).unwrap();
    assert_eq!(kept.len(), sent.body_len, "byte for byte");
    assert_eq!(serde_json::from_slice::<Value>(&kept).unwrap(), sent.body);
}
