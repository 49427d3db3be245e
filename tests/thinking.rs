//! Fake reasoning end to end: the budget reaching the upstream prompt, the answer split into
//! reasoning and text in both dialects, stream and non-stream, and every handling mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::{start, start_with};
use kiro_gateway::mock::{MockConfig, Reply, Script};
use serde_json::{json, Value};

const ANSWER: &str = "  <thinking>First, 2 < 3.\nSo yes é.</thinking>\n\nYes: 2 < 3.";

fn upstream_prompt(r: &common::Running) -> String {
    let req = r
        .mock
        .requests_to("/generateAssistantResponse")
        .pop()
        .unwrap();
    let cs = &req.body["conversationState"];
    cs["history"][0]["userInputMessage"]["content"]
        .as_str()
        .or(cs["currentMessage"]["userInputMessage"]["content"].as_str())
        .unwrap()
        .to_owned()
}

fn sse_data(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn openai_reasoning_effort_sets_the_budget_and_splits_the_answer() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 3)));
    let (s, _, b) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "reasoning_effort": "high",
                     "messages": [{"role": "user", "content": "Is 2 < 3?"}]}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(upstream_prompt(&r).starts_with(
        "<thinking_mode>enabled</thinking_mode>\n<max_thinking_length>16000</max_thinking_length>"
    ));
    let v: Value = serde_json::from_slice(&b).unwrap();
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "First, 2 < 3.\nSo yes é.");
    assert_eq!(m["content"], "Yes: 2 < 3.");
    assert!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap()
            > v["usage"]["completion_tokens_details"]["reasoning_tokens"]
                .as_u64()
                .unwrap()
    );
}

#[tokio::test]
async fn openai_stream_sends_reasoning_before_content() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 2)));
    let (_, _, b) = r
        .chat(json!({"model": "claude-sonnet-4-5", "stream": true,
                     "messages": [{"role": "user", "content": "Is 2 < 3?"}]}))
        .await;
    let deltas: Vec<Value> = sse_data(&b)
        .into_iter()
        .map(|c| c["choices"][0]["delta"].clone())
        .collect();
    let reasoning: String = deltas
        .iter()
        .filter_map(|d| d["reasoning_content"].as_str())
        .collect();
    let content: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(reasoning, "First, 2 < 3.\nSo yes é.");
    assert_eq!(content, "Yes: 2 < 3.");
    let last_reasoning = deltas
        .iter()
        .rposition(|d| d.get("reasoning_content").is_some())
        .unwrap();
    let first_content = deltas
        .iter()
        .position(|d| d.get("content").is_some())
        .unwrap();
    assert!(last_reasoning < first_content);
    assert_eq!(upstream_prompt(&r), "<thinking_mode>enabled</thinking_mode>\n<max_thinking_length>4000</max_thinking_length>\n\nIs 2 < 3?");
}

#[tokio::test]
async fn disabled_thinking_sends_no_injection_and_parses_nothing() {
    let r = start().await;
    r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 5)));
    let (_, _, b) = r
        .chat(
            json!({"model": "claude-sonnet-4-5", "reasoning_effort": "none",
                     "messages": [{"role": "user", "content": "Is 2 < 3?"}]}),
        )
        .await;
    assert_eq!(upstream_prompt(&r), "Is 2 < 3?");
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], ANSWER);

    r.mock.push_reply(Reply::Stream(Script::text("plain", 5)));
    let (s, _, _) = r
        .send(
            r.req(
                "POST",
                "/v1/messages",
                json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
            "thinking": {"type": "disabled"}, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(upstream_prompt(&r), "hi");

    // FAKE_REASONING=false: no injection unless the request asks
    let off = start_with(MockConfig::default(), |c| c.fake_reasoning = false).await;
    off.mock.push_reply(Reply::Stream(Script::text("plain", 5)));
    off.chat(
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(upstream_prompt(&off), "hi");
    off.mock.push_reply(Reply::Stream(Script::text("plain", 5)));
    off.chat(json!({"model": "claude-sonnet-4-5", "reasoning_effort": "low", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert!(upstream_prompt(&off).contains("<max_thinking_length>1024</max_thinking_length>"));
}

#[tokio::test]
async fn anthropic_thinking_blocks_stream_and_fold_with_a_signature() {
    let r = start().await;
    let req = |stream: bool| {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 2048, "stream": stream,
               "thinking": {"type": "enabled", "budget_tokens": 1234},
               "messages": [{"role": "user", "content": "Is 2 < 3?"}]})
        .to_string()
    };
    r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 3)));
    let (_, _, b) = r.send(r.req("POST", "/v1/messages", req(false))).await;
    assert!(upstream_prompt(&r).contains("<max_thinking_length>1234</max_thinking_length>"));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["content"][0]["thinking"], "First, 2 < 3.\nSo yes é.");
    let sig = v["content"][0]["signature"].as_str().unwrap().to_owned();
    assert!(sig.starts_with("kgw1_"));
    assert_eq!(
        v["content"][1],
        json!({"type": "text", "text": "Yes: 2 < 3."})
    );

    r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 3)));
    let (_, _, b) = r.send(r.req("POST", "/v1/messages", req(true))).await;
    let events = sse_data(&b);
    let thinking: String = events
        .iter()
        .filter_map(|e| e["delta"]["thinking"].as_str())
        .collect();
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(thinking, "First, 2 < 3.\nSo yes é.");
    assert_eq!(text, "Yes: 2 < 3.");
    let sig_delta = events
        .iter()
        .find_map(|e| e["delta"]["signature"].as_str())
        .unwrap();
    assert_eq!(
        sig_delta, sig,
        "stream and non-stream sign the same thinking alike"
    );
    // the thinking block is index 0 and closes before the text block opens at 1
    let starts: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["content_block"]["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(starts, [(0, "thinking".to_owned()), (1, "text".to_owned())]);
}

#[tokio::test]
async fn replayed_thinking_goes_back_only_when_it_is_ours() {
    let r = start().await;
    let ours = kiro_gateway::api::thinking::sign("earlier reasoning");
    for (sig, expect_sent) in [(ours.as_str(), true), ("EqQBCgIYAhIMforeign", false)] {
        r.mock.push_reply(Reply::Stream(Script::text("ok", 5)));
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "q1"},
                         {"role": "assistant", "content": [{"type": "thinking", "thinking": "earlier reasoning", "signature": sig},
                                                           {"type": "text", "text": "a1"}]},
                         {"role": "user", "content": "q2"}]});
        let (s, _, _) = r
            .send(r.req("POST", "/v1/messages", body.to_string()))
            .await;
        assert_eq!(s, 200);
        let req = r
            .mock
            .requests_to("/generateAssistantResponse")
            .pop()
            .unwrap();
        let assistant = req.body["conversationState"]["history"][1]["assistantResponseMessage"]
            ["content"]
            .as_str()
            .unwrap()
            .to_owned();
        if expect_sent {
            assert_eq!(assistant, "<thinking>earlier reasoning</thinking>\n\na1");
        } else {
            assert_eq!(assistant, "a1");
        }
    }
}

#[tokio::test]
async fn handling_modes_remove_strip_and_pass() {
    for (mode, want_content, want_reasoning) in [
        ("remove", "Yes: 2 < 3.", None),
        (
            "strip_tags",
            "First, 2 < 3.\nSo yes é.\n\nYes: 2 < 3.",
            None,
        ),
        ("pass", ANSWER, None),
        (
            "as_reasoning_content",
            "Yes: 2 < 3.",
            Some("First, 2 < 3.\nSo yes é."),
        ),
    ] {
        let r = start_with(MockConfig::default(), |c| {
            c.fake_reasoning_handling = mode.parse().unwrap()
        })
        .await;
        r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 4)));
        let (_, _, b) = r.chat(json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "q"}]})).await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], want_content, "{mode}");
        assert_eq!(m["reasoning_content"].as_str(), want_reasoning, "{mode}");
        // the Anthropic dialect honours the same modes
        r.mock.push_reply(Reply::Stream(Script::text(ANSWER, 4)));
        let (_, _, b) = r
            .send(
                r.req(
                    "POST",
                    "/v1/messages",
                    json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                "messages": [{"role": "user", "content": "q"}]})
                    .to_string(),
                ),
            )
            .await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        let text = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "text")
            .unwrap();
        assert_eq!(text["text"], want_content, "anthropic {mode}");
        let has_thinking = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "thinking");
        assert_eq!(has_thinking, want_reasoning.is_some(), "anthropic {mode}");
    }
}

#[tokio::test]
async fn an_unclosed_thinking_block_is_reasoning_and_the_answer_still_finishes() {
    let r = start().await;
    r.mock
        .push_reply(Reply::Stream(Script::text("<thinking>ran out of room", 4)));
    let (_, _, b) = r
        .chat(json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "q"}]}))
        .await;
    let chunks = sse_data(&b);
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, "ran out of room");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
}
