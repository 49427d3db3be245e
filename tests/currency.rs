//! Protocol currency: the newer runtimes' events (native reasoning, `metadataEvent` usage and
//! stop reasons, wrapped payloads, invalid state, empty answers) through both dialects, stream
//! and non-stream, and native reasoning requests shaped by the catalogue's schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{sse_payloads, start, start_with, Running};
use kiro_gateway::mock::{MockConfig, MockEvent, Reply, Script};
use serde_json::{json, Value};

/// A schema of the shape newer catalogues advertise: enabled/adaptive thinking with a
/// bounded budget, and an effort knob.
fn thinking_schema() -> Value {
    json!({"type": "object", "properties": {
        "thinking": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["enabled", "adaptive", "disabled"]},
            "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 32000}}},
        "output_config": {"type": "object", "properties": {
            "effort": {"type": "string", "enum": ["low", "medium", "high", "max"]}}}}})
}

fn native_mock() -> MockConfig {
    MockConfig {
        model_fields: vec![(
            "claude-sonnet-4.5".into(),
            json!({"additionalModelRequestFieldsSchema": thinking_schema()}),
        )],
        ..Default::default()
    }
}

fn usage_event(cache: bool) -> MockEvent {
    let mut u = json!({"uncachedInputTokens": 120, "outputTokens": 42, "totalTokens": 3262});
    if cache {
        u["cacheReadInputTokens"] = json!(3000);
        u["cacheWriteInputTokens"] = json!(100);
    }
    MockEvent::TokenUsage {
        usage: u,
        stop_reason: Some("END_TURN".into()),
    }
}

fn native_answer() -> Script {
    Script::new()
        .metadata()
        .event(MockEvent::Reasoning {
            text: "Two is less than three.".into(),
            signature: Some("sig-from-the-service".into()),
            delta: 5,
        })
        .event(MockEvent::RedactedReasoning("b3BhcXVl".into()))
        .text_deltas("Yes.", 2)
        .event(usage_event(true))
        .end()
}

async fn anthropic(r: &Running, body: Value) -> (u16, Vec<u8>) {
    let (s, _, b) = r
        .send(r.req("POST", "/v1/messages", body.to_string()))
        .await;
    (s.as_u16(), b.to_vec())
}

async fn openai(r: &Running, body: Value) -> (u16, Vec<u8>) {
    let (s, _, b) = r.chat(body).await;
    (s.as_u16(), b.to_vec())
}

// ---- 1. every event typed; stop reasons; empty answers ----

#[tokio::test]
async fn service_usage_and_cache_figures_are_reported_exactly_in_both_dialects() {
    let r = start().await;
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(
            Script::new()
                .metadata()
                .text_deltas("Hello", 2)
                .event(usage_event(true))
                .end(),
        ));
        let (s, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "stream": stream,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let usage = if stream {
            sse_payloads(&b)
                .into_iter()
                .find(|c| c["usage"].is_object())
                .unwrap()["usage"]
                .clone()
        } else {
            serde_json::from_slice::<Value>(&b).unwrap()["usage"].clone()
        };
        assert_eq!(
            usage["prompt_tokens"], 3220,
            "uncached + read + write: {usage}"
        );
        assert_eq!(usage["completion_tokens"], 42);
        assert_eq!(usage["total_tokens"], 3262);
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 3000);
        assert_eq!(usage["kiro"]["source"], "service");
        assert_eq!(usage["kiro"]["credits"], 0.0148);

        r.mock.push_reply(Reply::Stream(
            Script::new()
                .metadata()
                .text_deltas("Hello", 2)
                .event(usage_event(true))
                .end(),
        ));
        let (s, b) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let usage = if stream {
            sse_payloads(&b)
                .into_iter()
                .find(|e| e["type"] == "message_delta")
                .unwrap()["usage"]
                .clone()
        } else {
            serde_json::from_slice::<Value>(&b).unwrap()["usage"].clone()
        };
        assert_eq!(usage["input_tokens"], 120, "{usage}");
        assert_eq!(usage["cache_read_input_tokens"], 3000);
        assert_eq!(usage["cache_creation_input_tokens"], 100);
        assert_eq!(usage["output_tokens"], 42);
        assert_eq!(usage["kiro"]["source"], "service");
        assert_eq!(usage["kiro"]["credits"], 0.0148);
    }
}

#[tokio::test]
async fn no_cache_figure_appears_when_the_service_sent_none() {
    let r = start().await;
    for (label, script, source) in [
        ("no metadata", Script::text("Hello", 2), "context"),
        (
            "metadata without cache",
            Script::new()
                .metadata()
                .text_deltas("Hello", 2)
                .event(usage_event(false))
                .end(),
            "service",
        ),
        (
            "nothing at all",
            Script::new()
                .metadata()
                .text_deltas("Hello", 2)
                .event(MockEvent::Metering(0.01)),
            "estimate",
        ),
    ] {
        for stream in [false, true] {
            r.mock.push_reply(Reply::Stream(script.clone()));
            let (_, b) = openai(
                &r,
                json!({"model": "claude-sonnet-4-5", "stream": stream,
                       "stream_options": {"include_usage": true},
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
            let text = String::from_utf8_lossy(&b).into_owned();
            assert!(!text.contains("cached_tokens"), "{label}: {text}");
            assert!(
                text.contains(&format!("\"source\":\"{source}\"")),
                "{label}: {text}"
            );
            r.mock.push_reply(Reply::Stream(script.clone()));
            let (_, b) = anthropic(
                &r,
                json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
            let text = String::from_utf8_lossy(&b).into_owned();
            assert!(!text.contains("cache_read_input_tokens"), "{label}: {text}");
            assert!(
                !text.contains("cache_creation_input_tokens"),
                "{label}: {text}"
            );
            assert!(
                text.contains(&format!("\"source\":\"{source}\"")),
                "{label}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn max_tokens_stop_and_content_length_cut_end_with_length_in_both_dialects() {
    let r = start().await;
    let max_tokens = || {
        Script::new()
            .metadata()
            .text_deltas("A long answer that", 4)
            .event(MockEvent::TokenUsage {
                usage: json!({"uncachedInputTokens": 10, "outputTokens": 5}),
                stop_reason: Some("MAX_TOKENS".into()),
            })
            .end()
    };
    let cut = || {
        Script::new()
            .metadata()
            .text_deltas("A long answer that", 4)
            .event(MockEvent::Exception {
                kind: "ContentLengthExceededException".into(),
                message: "output too long".into(),
            })
    };
    for script in [max_tokens(), cut()] {
        for stream in [false, true] {
            r.mock.push_reply(Reply::Stream(script.clone()));
            let (s, b) = openai(
                &r,
                json!({"model": "claude-sonnet-4-5", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
            assert_eq!(s, 200);
            let finish: Vec<Value> = if stream {
                sse_payloads(&b)
                    .iter()
                    .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(|f| json!(f)))
                    .collect()
            } else {
                vec![
                    serde_json::from_slice::<Value>(&b).unwrap()["choices"][0]["finish_reason"]
                        .clone(),
                ]
            };
            assert_eq!(finish, [json!("length")], "{}", String::from_utf8_lossy(&b));
            if stream {
                assert!(String::from_utf8_lossy(&b).contains("[DONE]"));
            }
            r.mock.push_reply(Reply::Stream(script.clone()));
            let (s, b) = anthropic(
                &r,
                json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
            assert_eq!(s, 200);
            let stop = if stream {
                sse_payloads(&b)
                    .into_iter()
                    .find(|e| e["type"] == "message_delta")
                    .unwrap()["delta"]["stop_reason"]
                    .clone()
            } else {
                serde_json::from_slice::<Value>(&b).unwrap()["stop_reason"].clone()
            };
            assert_eq!(stop, "max_tokens");
        }
    }
}

#[tokio::test]
async fn an_empty_answer_is_a_valid_empty_completion() {
    let r = start().await;
    let empty = Script::new().event(MockEvent::ContextUsage(0.5));
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(empty.clone()));
        let (s, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 200);
        if stream {
            let chunks = sse_payloads(&b);
            assert_eq!(chunks.last().unwrap(), "[DONE]");
            assert!(chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop"));
        } else {
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "");
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
        }
        r.mock.push_reply(Reply::Stream(empty.clone()));
        let (s, b) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 200);
        if stream {
            let events = sse_payloads(&b);
            assert_eq!(events.last().unwrap()["type"], "message_stop");
            assert!(!events.iter().any(|e| e["type"] == "error"));
        } else {
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["content"], json!([]));
            assert_eq!(v["stop_reason"], "end_turn");
        }
    }
}

#[tokio::test]
async fn wrapped_payloads_and_code_events_are_answer_text() {
    let r = start().await;
    let script = Script::new()
        .event(MockEvent::Wrapped(Box::new(MockEvent::Text("Hel".into()))))
        .event(MockEvent::Raw {
            event_type: "codeEvent".into(),
            payload: r#"{"content":"lo"}"#.into(),
        })
        .event(MockEvent::Wrapped(Box::new(usage_event(false))))
        .event(MockEvent::Wrapped(Box::new(MockEvent::Metering(0.02))));
    r.mock.push_reply(Reply::Stream(script.clone()));
    let (s, b) = openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["usage"]["completion_tokens"], 42);
    assert_eq!(v["usage"]["kiro"]["credits"], 0.02);
    r.mock.push_reply(Reply::Stream(script));
    let (s, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let text: String = sse_payloads(&b)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello");
}

#[tokio::test]
async fn an_invalid_state_event_is_an_error_never_a_completion() {
    let r = start().await;
    let script = Script::new()
        .metadata()
        .text_deltas("partial", 3)
        .event(MockEvent::InvalidState {
            reason: "INVALID_CONVERSATION".into(),
            message: "conversation is in an invalid state".into(),
        })
        .end();
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(script.clone()));
        let (s, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let text = String::from_utf8_lossy(&b).into_owned();
        assert!(text.contains("invalid state"), "{text}");
        assert!(!text.contains("[DONE]") && !text.contains("\"finish_reason\":\"stop\""));
        if !stream {
            assert!(s >= 500, "{s}");
        }
        r.mock.push_reply(Reply::Stream(script.clone()));
        let (_, b) = anthropic(
            &r,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let text = String::from_utf8_lossy(&b).into_owned();
        assert!(text.contains("invalid state"), "{text}");
        assert!(!text.contains("message_stop") && !text.contains("end_turn"));
    }
}

// ---- 2. native reasoning ----

#[tokio::test]
async fn native_reasoning_is_requested_by_schema_and_streams_with_the_service_signature() {
    let r = start_with(native_mock(), |_| {}).await;
    // Anthropic: enabled with a budget (clamped to the schema's maximum)
    r.mock.push_reply(Reply::Stream(native_answer()));
    let (s, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
               "thinking": {"type": "enabled", "budget_tokens": 50000},
               "messages": [{"role": "user", "content": "Is 2 < 3?"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let up = r.last_generate();
    assert_eq!(
        up["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 32000}})
    );
    assert!(
        !up.to_string().contains("<thinking_mode>"),
        "no prompt tags with native reasoning: {up}"
    );
    let events = sse_payloads(&b);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| &e["content_block"])
        .collect();
    assert_eq!(starts[0]["type"], "thinking");
    assert_eq!(
        starts[1],
        &json!({"type": "redacted_thinking", "data": "b3BhcXVl"})
    );
    assert_eq!(starts[2]["type"], "text");
    let thinking: String = events
        .iter()
        .filter_map(|e| e["delta"]["thinking"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(thinking, "Two is less than three.");
    let sigs: Vec<&Value> = events
        .iter()
        .filter(|e| e["delta"]["type"] == "signature_delta")
        .map(|e| &e["delta"]["signature"])
        .collect();
    assert_eq!(sigs, [&json!("sig-from-the-service")]);

    // Anthropic non-stream, adaptive with an effort
    r.mock.push_reply(Reply::Stream(native_answer()));
    let (s, b) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
               "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
               "messages": [{"role": "user", "content": "Is 2 < 3?"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        r.last_generate()["additionalModelRequestFields"],
        json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}})
    );
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v["content"][0],
        json!({"type": "thinking", "thinking": "Two is less than three.", "signature": "sig-from-the-service"})
    );
    assert_eq!(
        v["content"][1],
        json!({"type": "redacted_thinking", "data": "b3BhcXVl"})
    );
    assert_eq!(v["content"][2], json!({"type": "text", "text": "Yes."}));

    // OpenAI, stream and non-stream: reasoning_content; the schema takes adaptive thinking
    // with an effort, so the effort goes as it is, not as a budget derived from it
    for stream in [false, true] {
        r.mock.push_reply(Reply::Stream(native_answer()));
        let (s, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "stream": stream, "reasoning_effort": "medium",
                   "messages": [{"role": "user", "content": "Is 2 < 3?"}]}),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(
            r.last_generate()["additionalModelRequestFields"],
            json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"}})
        );
        let (reasoning, content) = if stream {
            let chunks = sse_payloads(&b);
            let pick = |f: &str| -> String {
                chunks
                    .iter()
                    .filter_map(|c| c["choices"][0]["delta"][f].as_str().map(str::to_owned))
                    .collect()
            };
            (pick("reasoning_content"), pick("content"))
        } else {
            let v: Value = serde_json::from_slice(&b).unwrap();
            let m = &v["choices"][0]["message"];
            (
                m["reasoning_content"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        };
        assert_eq!(reasoning, "Two is less than three.");
        assert_eq!(content, "Yes.");
    }
}

#[tokio::test]
async fn models_without_a_schema_keep_prompt_tags_and_reasoning_mode_forces_either() {
    // no schema: prompt tags, no additional fields
    let r = start().await;
    r.mock
        .push_reply(Reply::Stream(Script::text("<thinking>hm</thinking>ok", 3)));
    let (s, b) = openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "reasoning_effort": "high",
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let up = r.last_generate();
    assert!(up.get("additionalModelRequestFields").is_none(), "{up}");
    assert!(up
        .to_string()
        .contains("<thinking_mode>enabled</thinking_mode>"));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "hm");

    // REASONING_MODE=prompt: tags even where the schema is advertised
    let r = start_with(native_mock(), |c| {
        c.reasoning_mode = kiro_gateway::api::thinking::ReasoningMode::Prompt
    })
    .await;
    r.mock.push_reply(Reply::Stream(Script::text("ok", 3)));
    openai(
        &r,
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let up = r.last_generate();
    assert!(up.get("additionalModelRequestFields").is_none(), "{up}");
    assert!(up.to_string().contains("<thinking_mode>"));

    // REASONING_MODE=native: fields even without a schema
    let r = start_with(MockConfig::default(), |c| {
        c.reasoning_mode = kiro_gateway::api::thinking::ReasoningMode::Native
    })
    .await;
    r.mock.push_reply(Reply::Stream(Script::text("ok", 3)));
    anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
               "thinking": {"type": "enabled", "budget_tokens": 2048},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let up = r.last_generate();
    assert_eq!(
        up["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 2048}})
    );
    assert!(!up.to_string().contains("<thinking_mode>"));

    // thinking disabled: neither
    let r = start_with(native_mock(), |_| {}).await;
    r.mock.push_reply(Reply::Stream(Script::text("ok", 3)));
    anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "thinking": {"type": "disabled"},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let up = r.last_generate();
    assert!(up.get("additionalModelRequestFields").is_none());
    assert!(!up.to_string().contains("<thinking_mode>"));
}

fn history_with_signed_thinking() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
           "thinking": {"type": "enabled", "budget_tokens": 2048},
           "messages": [
               {"role": "user", "content": "Is 2 < 3?"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "Two is less.", "signature": "sig-from-the-service"},
                   {"type": "text", "text": "Yes."}]},
               {"role": "user", "content": "And 3 < 2?"}]})
}

#[tokio::test]
async fn signed_thinking_in_history_goes_back_as_reasoning_content() {
    let r = start_with(native_mock(), |_| {}).await;
    r.mock.push_reply(Reply::Stream(Script::text("No.", 3)));
    let (s, _) = anthropic(&r, history_with_signed_thinking()).await;
    assert_eq!(s, 200);
    let up = r.last_generate();
    assert_eq!(
        up["conversationState"]["history"][1]["assistantResponseMessage"]["reasoningContent"],
        json!({"reasoningText": {"text": "Two is less.", "signature": "sig-from-the-service"}})
    );
    // with prompt-tag reasoning the signed block means nothing to the service: left out
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text("No.", 3)));
    anthropic(&r, history_with_signed_thinking()).await;
    let up = r.last_generate();
    assert!(!up.to_string().contains("reasoningContent"), "{up}");
}

#[tokio::test]
async fn a_refused_reasoning_history_is_retried_once_without_it() {
    let r = start_with(native_mock(), |_| {}).await;
    r.mock.push_reply(Reply::Status {
        status: 400,
        body: r#"{"message":"Improperly formed request.","reason":null}"#.into(),
    });
    r.mock.push_reply(Reply::Stream(Script::text("No.", 3)));
    let (s, b) = anthropic(&r, history_with_signed_thinking()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let calls = r.mock.requests_to("/generateAssistantResponse");
    assert_eq!(calls.len(), 2);
    assert!(calls[0].body.to_string().contains("reasoningContent"));
    assert!(!calls[1].body.to_string().contains("reasoningContent"));
    assert_eq!(
        calls[1].body["additionalModelRequestFields"],
        calls[0].body["additionalModelRequestFields"],
        "only the history changes"
    );

    // a 400 for a request without signed history is not retried
    r.mock.push_reply(Reply::Status {
        status: 400,
        body: r#"{"message":"Improperly formed request.","reason":null}"#.into(),
    });
    let (s, _) = anthropic(
        &r,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(r.mock.requests_to("/generateAssistantResponse").len(), 3);
}

#[tokio::test]
async fn fake_reasoning_handling_applies_to_native_reasoning_too() {
    for (mode, want) in [
        ("remove", "Yes."),
        ("strip_tags", "Two is less than three.Yes."),
        (
            "pass",
            "<thinking>Two is less than three.</thinking>\n\nYes.",
        ),
    ] {
        let r = start_with(native_mock(), |c| {
            c.fake_reasoning_handling = mode.parse().unwrap()
        })
        .await;
        r.mock.push_reply(Reply::Stream(native_answer()));
        let (s, b) = openai(
            &r,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(s, 200);
        let v: Value = serde_json::from_slice(&b).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], want, "{mode}");
        assert!(m.get("reasoning_content").is_none(), "{mode}: {m}");
    }
}
