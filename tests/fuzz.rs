//! Property tests: arbitrary bytes and arbitrary request-shaped JSON into both request parsers
//! and the conversion, arbitrary chunks into the event-stream decoder. Nothing may panic, and
//! the decoder never buffers more than its frame cap. (`PROPTEST_CASES=100000 cargo test
//! --release --test fuzz` runs a longer campaign.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use kiro_gateway::api::conversation::{to_kiro, BuildOptions};
use kiro_gateway::api::{anthropic, openai};
use kiro_gateway::kiro::events::frame_to_event;
use kiro_gateway::kiro::eventstream::{encode_frame, event_headers, Decoder};
use proptest::prelude::*;
use serde_json::{json, Value};

fn opts() -> BuildOptions {
    BuildOptions {
        model_id: "claude-sonnet-4.5".into(),
        origin: String::new(),
        profile_arn: None,
        conversation_id: "c".into(),
        tool_description_max: 100,
        ..Default::default()
    }
}

fn convert_both(bytes: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<openai::ChatCompletionRequest>(bytes) {
        if let Ok(conv) = openai::to_conversation(&req) {
            let _ = to_kiro(conv, &opts());
        }
    }
    if let Ok(req) = serde_json::from_slice::<anthropic::MessagesRequest>(bytes) {
        if let Ok(conv) = anthropic::to_conversation(&req, false) {
            let _ = to_kiro(conv, &opts());
        }
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z_]{0,8}".prop_map(Value::String),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "developer",
            "text",
            "image",
            "image_url",
            "tool_use",
            "tool_result",
            "thinking",
            "function",
            "object",
            "base64",
            "data:image/png;base64,aGk=",
            "aGk=",
        ])
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "role",
                        "content",
                        "type",
                        "text",
                        "tool_calls",
                        "tool_call_id",
                        "id",
                        "name",
                        "input",
                        "arguments",
                        "function",
                        "image_url",
                        "url",
                        "source",
                        "media_type",
                        "data",
                        "tool_use_id",
                        "is_error",
                        "parameters",
                        "input_schema",
                        "properties",
                        "required",
                        "thinking",
                        "signature",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn request_parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        convert_both(&bytes);
    }

    #[test]
    fn conversion_never_panics_on_request_shaped_json(
        messages in prop::collection::vec(value(), 0..8),
        tools in prop::collection::vec(value(), 0..3),
        system in value(),
        tool_choice in value(),
    ) {
        let body = json!({"model": "m", "max_tokens": 10, "messages": messages, "tools": tools,
                          "system": system, "tool_choice": tool_choice});
        convert_both(body.to_string().as_bytes());
        let body = json!({"model": "m", "messages": body["messages"], "tools": body["tools"], "tool_choice": body["tool_choice"]});
        convert_both(body.to_string().as_bytes());
    }

    #[test]
    fn decoder_never_panics_and_stays_bounded(
        noise in prop::collection::vec(any::<u8>(), 0..4096),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cuts in prop::collection::vec(1usize..200, 1..20),
    ) {
        // a valid stream, a few bytes flipped, then noise; fed in arbitrary pieces
        let mut data = Vec::new();
        for t in ["hello", "wörld", "日本"] {
            data.extend_from_slice(&encode_frame(&event_headers("assistantResponseEvent"), json!({"content": t}).to_string().as_bytes()));
        }
        for (i, b) in flips {
            let idx = i.index(data.len());
            data[idx] ^= b;
        }
        data.extend_from_slice(&noise);
        let cap = 8 * 1024;
        let mut d = Decoder::new().with_max_frame_len(cap);
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < data.len() {
            let n = (*cut.next().unwrap()).min(data.len() - at);
            d.push(&data[at..at + n]);
            at += n;
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => { let _ = frame_to_event(f); }
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
            prop_assert!(d.buffered() <= cap + 200, "buffered {}", d.buffered());
        }
        let _ = d.finish();
    }
}
